package attestd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/enclave"
	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/bulwark-project/bulwark/token"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
)

// inproc is a Server called directly (no network) with a software TPM
// host already enrolled: the setup of the fuzz test and the benchmarks.
type inproc struct {
	srv   *Server
	clock *fakeClock
	host  *softtpm.Host
	node  string
	ev    *softtpm.Launch
}

func simPolicyYAML() string {
	a := softtpm.SimulatedArtifacts()
	return fmt.Sprintf(`apiVersion: bulwark.dev/v1
name: sim
kernel:
  digests: [%s]
initrd:
  digests: [%s]
cmdline:
  exact: [%q]
image:
  digests: [%s]
args:
  allow: any
secrets: [db-password]
`, a.Kernel, a.Initrd, a.Cmdline, a.Image)
}

func newInproc(tb testing.TB) *inproc { return newInprocWith(tb, nil) }

// newInprocWith is newInproc with a chance to change the server's Config.
func newInprocWith(tb testing.TB, mod func(*Config)) *inproc {
	tb.Helper()
	return newInprocStore(tb, store.Options{}, mod)
}

// newInprocStore is newInprocWith with the store's options too.
func newInprocStore(tb testing.TB, so store.Options, mod func(*Config)) *inproc {
	tb.Helper()
	return newInprocAt(tb, "", so, mod)
}

// newInprocAt is newInprocStore with the embedded store in storeDir ("": a
// new temporary directory).
func newInprocAt(tb testing.TB, storeDir string, so store.Options, mod func(*Config)) *inproc {
	tb.Helper()
	return newInprocTPM(tb, storeDir, so, softtpm.Options{}, mod)
}

// newInprocTPM is newInprocAt with the simulated host TPM's options (its
// boot measurements).
func newInprocTPM(tb testing.TB, storeDir string, so store.Options, to softtpm.Options, mod func(*Config)) *inproc {
	tb.Helper()
	ctx := context.Background()
	dir := tb.TempDir()
	if storeDir == "" {
		storeDir = filepath.Join(dir, "store")
	}
	st, err := embedded.Open(ctx, storeDir, so)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	os.MkdirAll(filepath.Join(dir, "vault"), 0o700)
	v, err := enclave.New(ctx, enclave.NewFileBackend(filepath.Join(dir, "vault"), true, nil), st, true, enclave.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { v.Close() })
	if _, err := v.Put(ctx, "db-password", []byte("s3cret"), enclave.Meta{}); err != nil {
		tb.Fatal(err)
	}
	pdir := filepath.Join(dir, "policies")
	os.MkdirAll(pdir, 0o700)
	os.WriteFile(filepath.Join(pdir, "sim.yaml"), []byte(simPolicyYAML()), 0o600)
	clock := &fakeClock{t: time.Now().UTC()}
	w := policy.NewWatcher(pdir, policy.WatcherOptions{Now: clock.Now})
	if err := w.Reload(); err != nil {
		tb.Fatal(err)
	}
	tokens, err := token.LoadOrCreateKey(filepath.Join(dir, "token.key"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tp, err := softtpm.New(to)
	if err != nil {
		tb.Fatal(err)
	}
	ek, _ := verify.ParseEKPublic(tp.EKPublic())
	node := limits.NodeID(ek.Raw)
	cfg := Config{Store: st, Vault: v, Policies: w, Tokens: tokens, EKAllow: []string{node}, Now: clock.Now}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	enr, err := srv.Enroll(ctx, &bulwarkv1.EnrollRequest{EkPublic: tp.EKPublic(), AkPublic: tp.AKPublic()})
	if err != nil {
		tb.Fatal(err)
	}
	secret, err := tp.ActivateCredential(enr.GetCredentialBlob(), enr.GetEncryptedSecret())
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := srv.ActivateCredential(ctx, &bulwarkv1.ActivateCredentialRequest{NodeId: node, Secret: secret}); err != nil {
		tb.Fatal(err)
	}
	h := softtpm.NewHost(tp, limits.DefaultLaunchPCR)
	l, err := h.Launch(softtpm.SimulatedArtifacts(), "sim", clock.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return &inproc{srv: srv, clock: clock, host: h, node: node, ev: l}
}

// request makes a fresh nonce and a genuine request for the last launch.
func (p *inproc) request(tb testing.TB) *bulwarkv1.AttestRequest {
	ch, err := p.srv.Challenge(context.Background(), &bulwarkv1.ChallengeRequest{NodeId: p.node})
	if err != nil {
		tb.Fatal(err)
	}
	evd, err := p.host.Attest(quotedPCRs, ch.GetNonce())
	if err != nil {
		tb.Fatal(err)
	}
	req := &bulwarkv1.AttestRequest{NodeId: p.node, Nonce: ch.GetNonce(), Quote: evd.Quote, Signature: evd.Signature,
		Pcrs: make(map[uint32][]byte, len(evd.PCRs)), LaunchLog: evd.Log, SandboxId: p.ev.Event.SandboxID}
	for i, v := range evd.PCRs {
		req.Pcrs[uint32(i)] = v
	}
	return req
}
