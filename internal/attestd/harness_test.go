package attestd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/enclave"
	"github.com/bulwark-project/bulwark/enclave/wrap"
	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/internal/pki"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/internal/store/pgtest"
	"github.com/bulwark-project/bulwark/internal/store/postgres"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/bulwark-project/bulwark/token"
	"github.com/bulwark-project/bulwark/tpm"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
)

func TestMain(m *testing.M) {
	code := func() int {
		defer cleanupBinary()
		defer pgtest.Stop()
		return m.Run()
	}()
	os.Exit(code)
}

// fakeClock is the injectable clock of the in-process tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// The reference launch the test policy allows.
var (
	testKernel  = measure.DigestBytes(measure.SHA256, []byte("test kernel"))
	testInitrd  = measure.DigestBytes(measure.SHA256, []byte("test initrd"))
	testImage   = measure.DigestBytes(measure.SHA256, []byte("test image manifest"))
	testConfig  = measure.DigestBytes(measure.SHA256, []byte("test image config"))
	testCmdline = "console=ttyS0 panic=-1 reboot=t"
)

const testPolicyName = "test"

func testPolicyYAML(name, kernel string) string {
	return fmt.Sprintf(`apiVersion: bulwark.dev/v1
name: %s
kernel:
  digests:
    - %s
initrd:
  digests:
    - %s
cmdline:
  exact:
    - %q
image:
  digests:
    - %s
args:
  allow: any
secrets:
  - db-password
  - api-token
`, name, kernel, testInitrd, testCmdline, testImage)
}

// testEvent is a launch event the test policy allows (policy name given).
func testEvent(t testing.TB, pol string, guest []byte) measure.LaunchEvent {
	t.Helper()
	id := make([]byte, 16)
	rand.Read(id)
	return measure.LaunchEvent{
		SandboxID: hex.EncodeToString(id), Policy: pol, Kernel: testKernel, Initrd: testInitrd,
		Cmdline: testCmdline, CmdlineDigest: measure.DigestCmdline(measure.SHA256, testCmdline),
		Image: testImage, ImageConfig: testConfig, GuestPublicKey: guest, Time: time.Now().UTC(),
	}
}

// host is a launcher host with a real TPM (the in-process reference
// simulator through the tpm package) and a launch event log.
type host struct {
	t      testing.TB
	tpm    *tpm.TPM
	ekPub  []byte
	ekCert []byte
	akPub  []byte
	log    measure.Log
	nodeID string
}

func newHost(t testing.TB, spec string) *host {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tp, err := tpm.Open(ctx, spec)
	if err != nil {
		t.Fatalf("opening TPM %s: %v", spec, err)
	}
	t.Cleanup(func() { tp.Close() })
	h := &host{t: t, tpm: tp}
	if h.ekPub, err = tp.EKPublic(ctx); err != nil {
		t.Fatal(err)
	}
	if c, err := tp.EKCertificate(ctx); err == nil {
		h.ekCert = c
	}
	ak, err := tp.AK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h.akPub = ak.Public
	ek, err := verify.ParseEKPublic(h.ekPub)
	if err != nil {
		t.Fatal(err)
	}
	h.nodeID = limits.NodeID(ek.Raw)
	return h
}

// launch appends ev to the host's log and extends it into the launch PCR.
func (h *host) launch(ev measure.LaunchEvent) {
	h.t.Helper()
	_, err := h.log.Append(&ev, limits.DefaultLaunchPCR, []measure.Alg{measure.SHA256}, func(a measure.Alg, pcr int, d []byte) error {
		return h.tpm.Extend(context.Background(), pcr, d)
	})
	if err != nil {
		h.t.Fatal(err)
	}
}

// enroll enrolls and activates the host.
func (h *host) enroll(ctx context.Context, c *attestclient.Client) {
	h.t.Helper()
	r, err := c.Enroll(ctx, h.ekPub, h.ekCert, h.akPub)
	if err != nil {
		h.t.Fatalf("Enroll: %v", err)
	}
	if r.GetNodeId() != h.nodeID {
		h.t.Fatalf("node id %s, want %s", r.GetNodeId(), h.nodeID)
	}
	secret, err := h.tpm.ActivateCredential(ctx, r.GetCredentialBlob(), r.GetEncryptedSecret())
	if err != nil {
		h.t.Fatalf("TPM ActivateCredential: %v", err)
	}
	if err := c.Activate(ctx, h.nodeID, secret); err != nil {
		h.t.Fatalf("ActivateCredential: %v", err)
	}
}

// lastSandbox is the sandbox id of the host's last launch event.
func (h *host) lastSandbox() string {
	recs := h.log.Records()
	if len(recs) == 0 {
		h.t.Fatal("no launch yet")
	}
	return recs[len(recs)-1].SandboxID()
}

var quotedPCRs = []int{0, 7, limits.DefaultLaunchPCR}

// attestRequest quotes with nonce and builds the request for sandbox.
func (h *host) attestRequest(ctx context.Context, nonce []byte, sandbox string) *bulwarkv1.AttestRequest {
	h.t.Helper()
	q, err := h.tpm.Quote(ctx, quotedPCRs, nonce)
	if err != nil {
		h.t.Fatalf("TPM Quote: %v", err)
	}
	req := &bulwarkv1.AttestRequest{NodeId: h.nodeID, Nonce: nonce, Quote: q.Quoted, Signature: q.Signature,
		Pcrs: map[uint32][]byte{}, LaunchLog: h.log.Encode(), SandboxId: sandbox}
	for i, v := range q.PCRs {
		req.Pcrs[uint32(i)] = v
	}
	return req
}

// env is an attestd under test: the real server over TLS on a loopback
// port, a fake clock, the file vault and a policy directory.
type env struct {
	srv       *Server
	clock     *fakeClock
	addr      string
	st        store.Store
	vault     *enclave.Vault
	pki       *pki.CA
	dir       string
	policyDir string
	watcher   *policy.Watcher
	client    *attestclient.Client // no client certificate
	admin     *attestclient.Client // admin certificate
	metrics   string               // metrics HTTP address
}

type envOptions struct {
	storeKind string // "embedded" or "postgres"
	ekAllow   []string
	tokenTTL  time.Duration
	// requestTimeout is Config.RequestTimeout (0: the default).
	requestTimeout time.Duration
	// manyNonces lifts the store's per-node nonce limit, for a benchmark
	// that issues all its nonces to its one host before the timer starts
	// (no real host has thousands in flight).
	manyNonces bool
	// peerRate and peerBurst are Config.PeerRate and PeerBurst (0: the
	// defaults).
	peerRate  float64
	peerBurst int
	// maxConns and maxConnsPerPeer are ServeOptions.MaxConns and
	// MaxConnsPerPeer (0: the defaults).
	maxConns, maxConnsPerPeer int
	// idleTimeout is Config.IdleTimeout (0: the default).
	idleTimeout time.Duration
	// wrapStore, when set, wraps the store the server uses (e.st stays
	// the store underneath).
	wrapStore func(store.Store) store.Store
	// onPolicyLoad is the policy watcher's OnLoad (attestd serve judges
	// the kept sandboxes again there); it is called by the first load
	// too, before the server exists.
	onPolicyLoad func()
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	e := &env{clock: &fakeClock{t: time.Now().UTC().Truncate(time.Second)}, dir: dir}
	target, open := filepath.Join(dir, "store"), embedded.Open
	if o.storeKind == "postgres" {
		target, open = pgtest.DSN(t), postgres.Open
	}
	var err error
	so := store.Options{}
	if o.manyNonces {
		so.MaxNoncesPerNode = 1 << 20
	}
	e.st, err = open(ctx, target, so)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.st.Close() })
	vdir := filepath.Join(dir, "vault")
	os.MkdirAll(vdir, 0o700)
	e.vault, err = enclave.New(ctx, enclave.NewFileBackend(vdir, true, nil), e.st, true, enclave.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.vault.Close() })
	e.policyDir = filepath.Join(dir, "policies")
	os.MkdirAll(e.policyDir, 0o700)
	if err := os.WriteFile(filepath.Join(e.policyDir, "test.yaml"), []byte(testPolicyYAML(testPolicyName, testKernel)), 0o600); err != nil {
		t.Fatal(err)
	}
	e.watcher = policy.NewWatcher(e.policyDir, policy.WatcherOptions{Now: e.clock.Now, OnLoad: o.onPolicyLoad})
	srvStore := e.st
	if o.wrapStore != nil {
		srvStore = o.wrapStore(e.st)
	}
	if err := e.watcher.Reload(); err != nil {
		t.Fatal(err)
	}
	e.pki, _, err = pki.LoadOrCreate(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := e.pki.ServerCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := token.LoadOrCreateKey(filepath.Join(dir, "token.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.srv, err = New(Config{Store: srvStore, Vault: e.vault, Policies: e.watcher, Tokens: tokens,
		EKAllow: o.ekAllow, AdminCA: e.pki.CAPool(), Now: e.clock.Now, TokenTTL: o.tokenTTL, RequestTimeout: o.requestTimeout,
		PeerRate: o.peerRate, PeerBurst: o.peerBurst, IdleTimeout: o.idleTimeout})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- e.srv.Serve(sctx, ServeOptions{Listen: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", TLS: ServerTLSConfig(cert, e.pki.CAPool()),
			MaxConns: o.maxConns, MaxConnsPerPeer: o.maxConnsPerPeer,
			Ready: func(g, m net.Addr) { e.addr, e.metrics = g.String(), m.String(); close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	e.client = e.dial(t, "", "")
	certPath, keyPath, err := e.pki.IssueClientCert("alice", pki.AdminRoleURI, time.Hour, filepath.Join(dir, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	e.admin = e.dial(t, certPath, keyPath)
	return e
}

func (e *env) dial(t testing.TB, cert, key string) *attestclient.Client {
	t.Helper()
	c, err := attestclient.Dial(attestclient.Options{Addr: e.addr, CAFile: e.pki.CACertPath(), CertFile: cert, KeyFile: key, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// putSecrets stores the secrets the test policy grants.
func (e *env) putSecrets(t testing.TB) map[string][]byte {
	t.Helper()
	vals := map[string][]byte{"db-password": []byte("correct horse battery staple"), "api-token": []byte("tok-123")}
	for n, v := range vals {
		if _, err := e.admin.Admin.PutSecret(context.Background(), &bulwarkv1.PutSecretRequest{Name: n, Value: append([]byte(nil), v...)}); err != nil {
			t.Fatalf("PutSecret %s: %v", n, err)
		}
	}
	return vals
}

func newGuestKey(t testing.TB) *wrap.PrivateKey {
	t.Helper()
	k, err := wrap.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
