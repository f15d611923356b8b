package attestd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/enclave/wrap"
	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/internal/pki"
	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/token"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// wantCode fails unless err is a gRPC status with code and a message
// containing every one of substrs.
func wantCode(t *testing.T, err error, code codes.Code, substrs ...string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("got %v, want code %s", err, code)
	}
	for _, s := range substrs {
		if !strings.Contains(st.Message(), s) {
			t.Fatalf("message %q does not contain %q", st.Message(), s)
		}
	}
}

func TestServerEmbedded(t *testing.T) { runServerSuite(t, "embedded") }

func TestServerPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL (skipped with -short)")
	}
	runServerSuite(t, "postgres")
}

// runServerSuite is the whole attestd protocol against one store kind:
// enrollment, attestation, release and every refusal, with a real TPM
// (the reference simulator) on the host side and gRPC over TLS.
func runServerSuite(t *testing.T, storeKind string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h := newHost(t, "sim")
	e := newEnv(t, envOptions{storeKind: storeKind, ekAllow: []string{h.nodeID}})
	c := e.client
	guest := newGuestKey(t)
	ev := testEvent(t, testPolicyName, guest.PublicKey())
	h.launch(ev)

	t.Run("unknown node", func(t *testing.T) {
		_, _, err := c.Challenge(ctx, "sha256:"+strings.Repeat("ab", 32))
		wantCode(t, err, codes.NotFound, "node_id", "not enrolled")
		req := h.attestRequest(ctx, make([]byte, 32), ev.SandboxID)
		req.NodeId = "sha256:" + strings.Repeat("ab", 32)
		_, err = c.Attest(ctx, req)
		wantCode(t, err, codes.NotFound, "node_id")
	})

	t.Run("EK not trusted", func(t *testing.T) {
		other, err := softtpm.New(softtpm.Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Enroll(ctx, other.EKPublic(), nil, other.AKPublic())
		wantCode(t, err, codes.PermissionDenied, "ek_certificate", "not allow-listed")
	})

	t.Run("AK not a restricted signing key", func(t *testing.T) {
		_, err := c.Enroll(ctx, h.ekPub, nil, h.ekPub)
		wantCode(t, err, codes.InvalidArgument, "ak_public")
	})

	var enr *bulwarkv1.EnrollResponse
	t.Run("enroll; not activated yet", func(t *testing.T) {
		var err error
		enr, err = c.Enroll(ctx, h.ekPub, nil, h.akPub)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = c.Challenge(ctx, h.nodeID)
		wantCode(t, err, codes.FailedPrecondition, "not activated")
		_, err = c.Attest(ctx, h.attestRequest(ctx, make([]byte, 32), ev.SandboxID))
		wantCode(t, err, codes.FailedPrecondition, "not activated")
	})

	t.Run("wrong credential secret", func(t *testing.T) {
		err := c.Activate(ctx, h.nodeID, []byte("0123456789abcdef0123456789abcdef"))
		wantCode(t, err, codes.PermissionDenied, "does not match")
	})

	t.Run("activate", func(t *testing.T) {
		secret, err := h.tpm.ActivateCredential(ctx, enr.GetCredentialBlob(), enr.GetEncryptedSecret())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Activate(ctx, h.nodeID, secret); err != nil {
			t.Fatal(err)
		}
		// The challenge is single use.
		wantCode(t, c.Activate(ctx, h.nodeID, secret), codes.PermissionDenied)
	})

	secrets := e.putSecrets(t)

	var allowed *bulwarkv1.AttestResponse
	var allowedReq *bulwarkv1.AttestRequest
	t.Run("attest allow", func(t *testing.T) {
		nonce, _, err := c.Challenge(ctx, h.nodeID)
		if err != nil {
			t.Fatal(err)
		}
		allowedReq = h.attestRequest(ctx, nonce, ev.SandboxID)
		allowed, err = c.Attest(ctx, allowedReq)
		if err != nil {
			t.Fatal(err)
		}
		if allowed.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
			t.Fatalf("verdict %v, reasons %q", allowed.GetVerdict(), allowed.GetReasons())
		}
		checkToken(t, ctx, c, e, allowed.GetToken(), ev, h.nodeID, "allow")
	})

	t.Run("replayed nonce", func(t *testing.T) {
		_, err := c.Attest(ctx, allowedReq)
		wantCode(t, err, codes.PermissionDenied, "nonce", "already used")
	})

	t.Run("concurrent replay: exactly one wins", func(t *testing.T) {
		nonce, _, err := c.Challenge(ctx, h.nodeID)
		if err != nil {
			t.Fatal(err)
		}
		req := h.attestRequest(ctx, nonce, ev.SandboxID)
		const n = 8
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			go func() { _, err := c.Attest(ctx, req); errs <- err }()
		}
		ok := 0
		for i := 0; i < n; i++ {
			if err := <-errs; err == nil {
				ok++
			} else if status.Code(err) != codes.PermissionDenied {
				t.Errorf("replay: %v", err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d of %d concurrent uses of one nonce succeeded, want 1", ok, n)
		}
	})

	t.Run("release wraps to the event's key only", func(t *testing.T) {
		r, err := c.Release(ctx, allowed.GetAttestationId())
		if err != nil {
			t.Fatal(err)
		}
		if r.GetSandboxId() != ev.SandboxID || len(r.GetSecrets()) != 2 {
			t.Fatalf("release: sandbox %q, %d secrets", r.GetSandboxId(), len(r.GetSecrets()))
		}
		other := newGuestKey(t)
		for _, w := range r.GetSecrets() {
			pt, err := guest.Open(ev.SandboxID, w.GetName(), w.GetWrapped())
			if err != nil || string(pt) != string(secrets[w.GetName()]) {
				t.Fatalf("secret %s does not open with the guest key: %v", w.GetName(), err)
			}
			if strings.Contains(string(w.GetWrapped()), string(secrets[w.GetName()])) {
				t.Fatalf("secret %s released in clear", w.GetName())
			}
			if _, err := other.Open(ev.SandboxID, w.GetName(), w.GetWrapped()); !errors.Is(err, wrap.ErrOpen) {
				t.Fatalf("secret %s opens with another key: %v", w.GetName(), err)
			}
			if _, err := guest.Open("other-sandbox", w.GetName(), w.GetWrapped()); !errors.Is(err, wrap.ErrOpen) {
				t.Fatalf("secret %s opens for another sandbox: %v", w.GetName(), err)
			}
		}
		_, err = c.Release(ctx, allowed.GetAttestationId())
		wantCode(t, err, codes.FailedPrecondition, "already done")
	})

	t.Run("attest without a token", func(t *testing.T) {
		nonce, _, err := c.Challenge(ctx, h.nodeID)
		if err != nil {
			t.Fatal(err)
		}
		req := h.attestRequest(ctx, nonce, ev.SandboxID)
		req.OmitToken = true
		r, err := c.Attest(ctx, req)
		if err != nil || r.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
			t.Fatalf("attest: %v %v %q", err, r.GetVerdict(), r.GetReasons())
		}
		if r.GetToken() != "" || r.GetAttestationId() == "" || r.GetExpiresAt() == nil {
			t.Fatalf("answer without a token: token %q, id %q, expires %v", r.GetToken(), r.GetAttestationId(), r.GetExpiresAt())
		}
		rel, err := c.Release(ctx, r.GetAttestationId())
		if err != nil || len(rel.GetSecrets()) != 2 {
			t.Fatalf("release by id of a tokenless verdict: %v, %v", err, rel)
		}
	})

	t.Run("expired nonce", func(t *testing.T) {
		nonce, _, err := c.Challenge(ctx, h.nodeID)
		if err != nil {
			t.Fatal(err)
		}
		req := h.attestRequest(ctx, nonce, ev.SandboxID)
		e.clock.Advance(DefaultNonceTTL + time.Second)
		_, err = c.Attest(ctx, req)
		wantCode(t, err, codes.PermissionDenied, "nonce", "expired")
	})

	t.Run("nonce of another value", func(t *testing.T) {
		nonce, _, _ := c.Challenge(ctx, h.nodeID)
		req := h.attestRequest(ctx, nonce, ev.SandboxID)
		req.Nonce = append([]byte(nil), nonce...)
		req.Nonce[0] ^= 1
		_, err := c.Attest(ctx, req)
		wantCode(t, err, codes.PermissionDenied, "nonce")
	})

	t.Run("forged quote", func(t *testing.T) {
		nonce, _, _ := c.Challenge(ctx, h.nodeID)
		req := h.attestRequest(ctx, nonce, ev.SandboxID)
		req.Quote[len(req.Quote)-1] ^= 0x80 // inside the PCR digest
		_, err := c.Attest(ctx, req)
		wantCode(t, err, codes.PermissionDenied, "quote")
	})

	t.Run("PCR values differ from the quote", func(t *testing.T) {
		nonce, _, _ := c.Challenge(ctx, h.nodeID)
		req := h.attestRequest(ctx, nonce, ev.SandboxID)
		req.Pcrs[0] = make([]byte, 32)
		req.Pcrs[0][0] = 1
		_, err := c.Attest(ctx, req)
		wantCode(t, err, codes.PermissionDenied, "quote")
	})

	t.Run("quote signed by another AK", func(t *testing.T) {
		other, err := softtpm.New(softtpm.Options{})
		if err != nil {
			t.Fatal(err)
		}
		nonce, _, _ := c.Challenge(ctx, h.nodeID)
		req := h.attestRequest(ctx, nonce, ev.SandboxID)
		quoted, sig, err := other.Quote(quotedPCRs, nonce)
		if err != nil {
			t.Fatal(err)
		}
		vals, _ := other.ReadPCRs(quotedPCRs)
		req.Quote, req.Signature = quoted, sig
		for i, v := range vals {
			req.Pcrs[uint32(i)] = v
		}
		_, err = c.Attest(ctx, req)
		wantCode(t, err, codes.PermissionDenied, "quote")
	})

	t.Run("log edited after quoting", func(t *testing.T) {
		nonce, _, _ := c.Challenge(ctx, h.nodeID)
		req := h.attestRequest(ctx, nonce, ev.SandboxID)
		// Same number of events, the last one changed.
		lg, err := measure.ParseLog(req.LaunchLog)
		if err != nil {
			t.Fatal(err)
		}
		var edited measure.Log
		recs := lg.Records()
		for i, r := range recs {
			e2 := *r.Event
			if i == len(recs)-1 {
				e2.Kernel = measure.DigestBytes(measure.SHA256, []byte("another kernel"))
			}
			if _, err := edited.Append(&e2, limits.DefaultLaunchPCR, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		req.LaunchLog = edited.Encode()
		_, err = c.Attest(ctx, req)
		wantCode(t, err, codes.PermissionDenied, "launch_log", "replay")
	})

	t.Run("log with an unmeasured event appended", func(t *testing.T) {
		nonce, _, _ := c.Challenge(ctx, h.nodeID)
		req := h.attestRequest(ctx, nonce, ev.SandboxID)
		lg, _ := measure.ParseLog(req.LaunchLog)
		extra := testEvent(t, testPolicyName, guest.PublicKey())
		lg.Append(&extra, limits.DefaultLaunchPCR, nil, nil)
		req.LaunchLog, req.SandboxId = lg.Encode(), extra.SandboxID
		_, err := c.Attest(ctx, req)
		wantCode(t, err, codes.PermissionDenied, "launch_log")
	})

	t.Run("request over the size limit", func(t *testing.T) {
		req := h.attestRequest(ctx, make([]byte, 32), ev.SandboxID)
		req.FirmwareEventLog = make([]byte, MaxRequestSize)
		// A client that does not limit what it sends: the server refuses.
		big, err := attestclient.Dial(attestclient.Options{Addr: e.addr, CAFile: e.pki.CACertPath(), ServerName: "localhost",
			DialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64 << 20))}})
		if err != nil {
			t.Fatal(err)
		}
		defer big.Close()
		_, err = big.Attest(ctx, req)
		if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "received message larger than max") {
			t.Fatalf("got %v, want the server's ResourceExhausted", err)
		}
	})

	t.Run("malformed log", func(t *testing.T) {
		nonce, _, _ := c.Challenge(ctx, h.nodeID)
		req := h.attestRequest(ctx, nonce, ev.SandboxID)
		req.LaunchLog = req.LaunchLog[:len(req.LaunchLog)-3]
		_, err := c.Attest(ctx, req)
		wantCode(t, err, codes.InvalidArgument, "launch_log")
	})

	t.Run("an earlier sandbox is attested after later launches", func(t *testing.T) {
		ev2 := testEvent(t, testPolicyName, newGuestKey(t).PublicKey())
		h.launch(ev2)
		ev3 := testEvent(t, testPolicyName, newGuestKey(t).PublicKey())
		h.launch(ev3)
		// ev2 is neither first nor last in the log: it is found and judged.
		nonce, _, _ := c.Challenge(ctx, h.nodeID)
		r, err := c.Attest(ctx, h.attestRequest(ctx, nonce, ev2.SandboxID))
		if err != nil || r.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
			t.Fatalf("attesting a sandbox launched before another: %v %v %q", r.GetVerdict(), err, r.GetReasons())
		}
		// A sandbox the log does not hold.
		nonce, _, _ = c.Challenge(ctx, h.nodeID)
		_, err = c.Attest(ctx, h.attestRequest(ctx, nonce, "0123456789abcdef0123456789abcdef"))
		wantCode(t, err, codes.PermissionDenied, "sandbox_id", "no event for sandbox")
		// The same sandbox id recorded twice (a second event naming another
		// guest key) is ambiguous: refused.
		dup := ev3
		dup.GuestPublicKey = newGuestKey(t).PublicKey()
		h.launch(dup)
		nonce, _, _ = c.Challenge(ctx, h.nodeID)
		_, err = c.Attest(ctx, h.attestRequest(ctx, nonce, ev3.SandboxID))
		wantCode(t, err, codes.PermissionDenied, "sandbox_id", "2 events for sandbox", "launched once")
	})

	t.Run("policy deny", func(t *testing.T) {
		bad := testEvent(t, testPolicyName, newGuestKey(t).PublicKey())
		bad.Kernel = measure.DigestBytes(measure.SHA256, []byte("unapproved kernel"))
		h.launch(bad)
		nonce, _, _ := c.Challenge(ctx, h.nodeID)
		r, err := c.Attest(ctx, h.attestRequest(ctx, nonce, bad.SandboxID))
		if err != nil {
			t.Fatal(err)
		}
		if r.GetVerdict() != bulwarkv1.Verdict_VERDICT_DENY || len(r.GetReasons()) == 0 {
			t.Fatalf("verdict %v reasons %q, want deny with reasons", r.GetVerdict(), r.GetReasons())
		}
		if !strings.Contains(strings.Join(r.GetReasons(), "\n"), "kernel") {
			t.Fatalf("reasons %q do not name the kernel", r.GetReasons())
		}
		checkToken(t, ctx, c, e, r.GetToken(), bad, h.nodeID, "deny")
		_, err = c.Release(ctx, r.GetAttestationId())
		wantCode(t, err, codes.PermissionDenied, "grants no secrets")
		_, err = c.ReleaseWithToken(ctx, r.GetToken())
		wantCode(t, err, codes.PermissionDenied, "denied")
	})

	// A launch event whose command line the guest kernel splits differently
	// from the policy (0xa0 is a space to the kernel) is denied, even by a
	// params rule whose wildcard would match the whole as one parameter.
	t.Run("cmdline smuggled past a params rule", func(t *testing.T) {
		pol := strings.Replace(testPolicyYAML("params", testKernel), fmt.Sprintf("  exact:\n    - %q\n", testCmdline),
			"  params:\n    allow: [console=ttyS0, \"loglevel=*\"]\n", 1)
		os.WriteFile(filepath.Join(e.policyDir, "params.yaml"), []byte(pol), 0o600)
		defer func() { os.Remove(filepath.Join(e.policyDir, "params.yaml")); e.watcher.Reload() }()
		if err := e.watcher.Reload(); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ cmdline, verdict string }{
			{"console=ttyS0 loglevel=8", "allow"},
			{"console=ttyS0 loglevel=8\u00a0kprobe_event=p:vfs_write", "deny"},
			{"console=ttyS0 loglevel=8\tkprobe_event=p:vfs_write", "deny"},
		} {
			ev := testEvent(t, "params", newGuestKey(t).PublicKey())
			ev.Cmdline, ev.CmdlineDigest = tc.cmdline, measure.DigestCmdline(measure.SHA256, tc.cmdline)
			h.launch(ev)
			nonce, _, _ := c.Challenge(ctx, h.nodeID)
			r, err := c.Attest(ctx, h.attestRequest(ctx, nonce, ev.SandboxID))
			if err != nil {
				t.Fatal(err)
			}
			reasons := strings.Join(r.GetReasons(), "\n")
			if tc.verdict == "allow" && r.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW ||
				tc.verdict == "deny" && (r.GetVerdict() != bulwarkv1.Verdict_VERDICT_DENY || !strings.Contains(reasons, "refused: kernel command line byte 24")) {
				t.Fatalf("%q: verdict %v reasons %q, want %s", tc.cmdline, r.GetVerdict(), reasons, tc.verdict)
			}
			pf, err := c.Preflight(ctx, &bulwarkv1.PreflightRequest{NodeId: h.nodeID, Policy: "params", Kernel: testKernel, Initrd: testInitrd,
				Image: testImage, ImageConfig: testConfig, Cmdline: tc.cmdline})
			if err != nil || pf.GetAllow() != (tc.verdict == "allow") {
				t.Fatalf("preflight %q: %v, %v", tc.cmdline, pf, err)
			}
		}
	})

	t.Run("preflight", func(t *testing.T) {
		pre := func(mut func(r *bulwarkv1.PreflightRequest)) *bulwarkv1.PreflightRequest {
			r := &bulwarkv1.PreflightRequest{NodeId: h.nodeID, Policy: testPolicyName, Kernel: testKernel, Initrd: testInitrd,
				Image: testImage, ImageConfig: testConfig, Cmdline: testCmdline}
			mut(r)
			return r
		}
		r, err := c.Preflight(ctx, pre(func(*bulwarkv1.PreflightRequest) {}))
		if err != nil || !r.GetAllow() || r.GetPolicy() != testPolicyName {
			t.Fatalf("preflight of an allowed launch: %v, %v", r, err)
		}
		r, err = c.Preflight(ctx, pre(func(r *bulwarkv1.PreflightRequest) {
			r.Kernel = measure.DigestBytes(measure.SHA256, []byte("unapproved kernel"))
			r.Cmdline = "console=ttyS0 init=/bin/sh"
		}))
		if err != nil || r.GetAllow() || len(r.GetReasons()) != 2 ||
			!strings.HasPrefix(r.GetReasons()[0], "kernel:") || !strings.HasPrefix(r.GetReasons()[1], "cmdline:") {
			t.Fatalf("preflight of a refused launch: %v, %v (want a refusal naming kernel and cmdline)", r, err)
		}
		// Without an admin certificate the reasons do not say what the
		// policy allows; with one they do.
		for _, allowed := range []string{testKernel, testCmdline, strings.TrimPrefix(testKernel, "sha256:")[:16]} {
			if strings.Contains(strings.Join(r.GetReasons(), "\n"), allowed) {
				t.Fatalf("preflight reasons show what the policy allows (%s): %q", allowed, r.GetReasons())
			}
		}
		ra, err := e.admin.Preflight(ctx, pre(func(r *bulwarkv1.PreflightRequest) {
			r.Kernel = measure.DigestBytes(measure.SHA256, []byte("unapproved kernel"))
			r.Cmdline = "console=ttyS0 init=/bin/sh"
		}))
		if err != nil || ra.GetAllow() || len(ra.GetReasons()) != 2 || !strings.Contains(strings.Join(ra.GetReasons(), "\n"), testKernel) {
			t.Fatalf("preflight with an admin certificate: %v, %v (want the policy's reasons, its allowed kernel among them)", ra, err)
		}
		r, err = c.Preflight(ctx, pre(func(r *bulwarkv1.PreflightRequest) { r.Policy = "no-such-policy" }))
		if err != nil || r.GetAllow() || len(r.GetReasons()) != 1 || !strings.Contains(r.GetReasons()[0], `"no-such-policy" is not loaded`) {
			t.Fatalf("preflight against an unknown policy: %v, %v", r, err)
		}
		for _, tc := range []struct {
			field string
			mut   func(r *bulwarkv1.PreflightRequest)
		}{
			{"node_id", func(r *bulwarkv1.PreflightRequest) { r.NodeId = "node" }},
			{"policy", func(r *bulwarkv1.PreflightRequest) { r.Policy = "" }},
			{"kernel", func(r *bulwarkv1.PreflightRequest) { r.Kernel = "" }},
			{"image", func(r *bulwarkv1.PreflightRequest) { r.Image = "sha256:xyz" }},
			{"cmdline", func(r *bulwarkv1.PreflightRequest) { r.Cmdline = strings.Repeat("a", MaxCmdline+1) }},
			{"args", func(r *bulwarkv1.PreflightRequest) { r.Args = make([]string, MaxArgs+1) }},
			{"signatures[0]", func(r *bulwarkv1.PreflightRequest) { r.Signatures = []*bulwarkv1.ArtifactSignature{{}} }},
			{"template_ram", func(r *bulwarkv1.PreflightRequest) { r.TemplateRam = "sha256:xyz" }},
			{"template_recipe", func(r *bulwarkv1.PreflightRequest) {
				r.TemplateRam = measure.DigestBytes(measure.SHA256, []byte("ram")) // without recipe and state
			}},
			{"env_keys[0]", func(r *bulwarkv1.PreflightRequest) {
				r.EnvKeys, r.EnvDigest = []string{"A=B"}, measure.DigestBytes(measure.SHA256, nil)
			}},
			{"env_keys", func(r *bulwarkv1.PreflightRequest) {
				r.EnvKeys, r.EnvDigest = []string{"B", "A"}, measure.DigestBytes(measure.SHA256, nil)
			}},
			{"env_digest", func(r *bulwarkv1.PreflightRequest) { r.EnvKeys = []string{"A"} }},
			{"working_dir", func(r *bulwarkv1.PreflightRequest) { r.WorkingDir = "srv" }},
			{"user", func(r *bulwarkv1.PreflightRequest) { r.User = "a b" }},
			{"network", func(r *bulwarkv1.PreflightRequest) { r.Network = "bridge" }},
			{"ports", func(r *bulwarkv1.PreflightRequest) { r.Network, r.Ports = "tap", []string{"0.0.0.0:80:80/tcp"} }},
			{"ports", func(r *bulwarkv1.PreflightRequest) { r.Ports = []string{"0.0.0.0:80:80/tcp"} }},
			{"ports[0]", func(r *bulwarkv1.PreflightRequest) { r.Network, r.Ports = "user", []string{"80:80"} }},
			{"volumes", func(r *bulwarkv1.PreflightRequest) { r.Volumes = []string{"tmpfs:/proc/x:0"} }},
		} {
			_, err := c.Preflight(ctx, pre(tc.mut))
			wantCode(t, err, codes.InvalidArgument, tc.field)
		}
		// A clone is judged with its template: this policy has no templates
		// section, so it passes like a cold boot (the refusal of a cold-only
		// policy before boot is tested through the binaries in e2e).
		r, err = c.Preflight(ctx, pre(func(r *bulwarkv1.PreflightRequest) {
			r.TemplateRecipe = measure.DigestBytes(measure.SHA256, []byte("recipe"))
			r.TemplateRam = measure.DigestBytes(measure.SHA256, []byte("ram"))
			r.TemplateState = measure.DigestBytes(measure.SHA256, []byte("state"))
		}))
		if err != nil || !r.GetAllow() {
			t.Fatalf("preflight of a clone: %v, %v", r, err)
		}
		// Environment variables and a network this policy does not allow
		// are refused before boot, by name of the part refused.
		r, err = c.Preflight(ctx, pre(func(r *bulwarkv1.PreflightRequest) {
			r.EnvKeys, r.EnvDigest = []string{"DEBUG"}, measure.EnvDigest(measure.SHA256, []string{"DEBUG=1"})
			r.Network, r.Ports = "user", []string{"127.0.0.1:8080:80/tcp"}
		}))
		if err != nil || r.GetAllow() || len(r.GetReasons()) != 2 ||
			!strings.HasPrefix(r.GetReasons()[0], "env:") || !strings.HasPrefix(r.GetReasons()[1], "network:") {
			t.Fatalf("preflight of env and network: %v, %v (want a refusal naming env and network)", r, err)
		}
		_, err = c.Preflight(ctx, pre(func(r *bulwarkv1.PreflightRequest) { r.NodeId = "sha256:" + strings.Repeat("cd", 32) }))
		wantCode(t, err, codes.NotFound, "node_id", "not enrolled")
	})

	t.Run("unknown policy is a deny", func(t *testing.T) {
		ev3 := testEvent(t, "no-such-policy", newGuestKey(t).PublicKey())
		h.launch(ev3)
		nonce, _, _ := c.Challenge(ctx, h.nodeID)
		r, err := c.Attest(ctx, h.attestRequest(ctx, nonce, ev3.SandboxID))
		if err != nil {
			t.Fatal(err)
		}
		if r.GetVerdict() != bulwarkv1.Verdict_VERDICT_DENY {
			t.Fatalf("verdict %v", r.GetVerdict())
		}
	})

	t.Run("release by token; expired window", func(t *testing.T) {
		g := newGuestKey(t)
		ev4 := testEvent(t, testPolicyName, g.PublicKey())
		h.launch(ev4)
		nonce, _, _ := c.Challenge(ctx, h.nodeID)
		r, err := c.Attest(ctx, h.attestRequest(ctx, nonce, ev4.SandboxID))
		if err != nil || r.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
			t.Fatalf("attest: %v %v %q", err, r.GetVerdict(), r.GetReasons())
		}
		rel, err := c.ReleaseWithToken(ctx, r.GetToken())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Open(ev4.SandboxID, rel.GetSecrets()[0].GetName(), rel.GetSecrets()[0].GetWrapped()); err != nil {
			t.Fatal(err)
		}
		// A second allow, released after its window.
		nonce, _, _ = c.Challenge(ctx, h.nodeID)
		r, err = c.Attest(ctx, h.attestRequest(ctx, nonce, ev4.SandboxID))
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(DefaultTokenTTL + time.Second)
		_, err = c.Release(ctx, r.GetAttestationId())
		wantCode(t, err, codes.FailedPrecondition, "window has closed")
		_, err = c.ReleaseWithToken(ctx, r.GetToken())
		wantCode(t, err, codes.PermissionDenied, "token", "expired")
		// A forged token (signature of another key).
		other, _ := token.LoadOrCreateKey(filepath.Join(t.TempDir(), "k"), nil)
		forged, _ := other.Sign(&token.Claims{Issuer: token.Issuer, ID: r.GetAttestationId(), Verdict: "allow", ExpiresAt: e.clock.Now().Add(time.Hour).Unix()})
		_, err = c.ReleaseWithToken(ctx, forged)
		wantCode(t, err, codes.PermissionDenied, "token", "bad signature")
	})

	t.Run("allow without secrets releases an empty list", func(t *testing.T) {
		pol := strings.Replace(testPolicyYAML("nosecrets", testKernel), "secrets:\n  - db-password\n  - api-token\n", "", 1)
		if strings.Contains(pol, "secrets:") {
			t.Fatal("test policy still grants secrets")
		}
		os.WriteFile(filepath.Join(e.policyDir, "nosecrets.yaml"), []byte(pol), 0o600)
		if err := e.watcher.Reload(); err != nil {
			t.Fatal(err)
		}
		ev5 := testEvent(t, "nosecrets", newGuestKey(t).PublicKey())
		h.launch(ev5)
		nonce, _, _ := c.Challenge(ctx, h.nodeID)
		r, err := c.Attest(ctx, h.attestRequest(ctx, nonce, ev5.SandboxID))
		if err != nil || r.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
			t.Fatalf("attest: %v %v %q", err, r.GetVerdict(), r.GetReasons())
		}
		rel, err := c.Release(ctx, r.GetAttestationId())
		if err != nil || len(rel.GetSecrets()) != 0 || rel.GetSandboxId() != ev5.SandboxID {
			t.Fatalf("release: %v %v", err, rel)
		}
		os.Remove(filepath.Join(e.policyDir, "nosecrets.yaml"))
		e.watcher.Reload()
	})

	t.Run("re-enroll keeps an active node", func(t *testing.T) {
		r, err := c.Enroll(ctx, h.ekPub, nil, h.akPub)
		if err != nil {
			t.Fatal(err)
		}
		_ = r
		nonce, _, err := c.Challenge(ctx, h.nodeID)
		if err != nil {
			t.Fatalf("active node demoted by re-enroll: %v", err)
		}
		_ = nonce
		other, _ := softtpm.New(softtpm.Options{})
		_, err = c.Enroll(ctx, h.ekPub, nil, other.AKPublic())
		wantCode(t, err, codes.FailedPrecondition, "another AK")
	})

	t.Run("admin API", func(t *testing.T) { adminChecks(t, ctx, e, h) })
	t.Run("health, reflection, metrics", func(t *testing.T) { serviceChecks(t, ctx, e) })

	t.Run("revocation", func(t *testing.T) {
		a := e.admin.Admin
		nonce, _, err := c.Challenge(ctx, h.nodeID)
		if err != nil {
			t.Fatal(err)
		}
		pending := h.attestRequest(ctx, nonce, h.lastSandbox())
		if _, err := a.RevokeNode(ctx, &bulwarkv1.RevokeNodeRequest{NodeId: h.nodeID}); err != nil {
			t.Fatal(err)
		}
		_, err = c.Attest(ctx, pending)
		wantCode(t, err, codes.PermissionDenied, "revoked")
		_, _, err = c.Challenge(ctx, h.nodeID)
		wantCode(t, err, codes.PermissionDenied, "revoked")
		_, err = c.Enroll(ctx, h.ekPub, nil, h.akPub)
		wantCode(t, err, codes.PermissionDenied, "revoked")
		nodes, _ := a.ListNodes(ctx, &bulwarkv1.ListNodesRequest{})
		if nodes.GetNodes()[0].GetState() != "revoked" {
			t.Fatalf("state %q", nodes.GetNodes()[0].GetState())
		}
		_, err = a.RevokeNode(ctx, &bulwarkv1.RevokeNodeRequest{NodeId: "sha256:" + strings.Repeat("00", 32)})
		wantCode(t, err, codes.NotFound)
		// Deleted, the host enrolls afresh.
		if _, err := a.DeleteNode(ctx, &bulwarkv1.DeleteNodeRequest{NodeId: h.nodeID}); err != nil {
			t.Fatal(err)
		}
		h.enroll(ctx, c)
		if _, _, err := c.Challenge(ctx, h.nodeID); err != nil {
			t.Fatal(err)
		}
	})
}

// checkToken verifies a token with token.Verify and, independently, with
// go-jose against the published JWKS, and checks its claims.
func checkToken(t *testing.T, ctx context.Context, c *attestclient.Client, e *env, tok string, ev measure.LaunchEvent, node, verdict string) {
	t.Helper()
	keys, err := c.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(keys.GetJwks()), &set); err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var std jwt.Claims
	var mine token.Claims
	if err := parsed.Claims(set.Keys[0].Key, &std, &mine); err != nil {
		t.Fatalf("go-jose does not verify the token with the JWKS: %v", err)
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: token.Issuer, Time: e.clock.Now()}, 0); err != nil {
		t.Fatal(err)
	}
	got, err := token.Verify(tok, e.srv.Tokens().Public(), e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	gk := sha256.Sum256(ev.GuestPublicKey)
	if got.Node != node || got.Sandbox != ev.SandboxID || got.Verdict != verdict || got.Policy != ev.Policy ||
		got.Digests.Kernel != ev.Kernel || got.Digests.Image != ev.Image || got.GuestKeyHash != "sha256:"+hex.EncodeToString(gk[:]) {
		t.Fatalf("claims %+v do not match the event %+v", got, ev)
	}
	if _, err := token.Verify(tok, e.srv.Tokens().Public(), e.clock.Now().Add(DefaultTokenTTL+time.Second)); !errors.Is(err, token.ErrInvalid) {
		t.Fatalf("expired token verifies: %v", err)
	}
}

func adminChecks(t *testing.T, ctx context.Context, e *env, h *host) {
	// No certificate, a host certificate, a foreign CA's admin certificate.
	_, err := e.client.Admin.ListSecrets(ctx, &bulwarkv1.ListSecretsRequest{})
	wantCode(t, err, codes.PermissionDenied, "admin client certificate is required")
	hc, hk, err := e.pki.IssueClientCert("host1", pki.HostRoleURI, time.Hour, filepath.Join(e.dir, "hostcert"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.dial(t, hc, hk).Admin.PutSecret(ctx, &bulwarkv1.PutSecretRequest{Name: "x", Value: []byte("y")})
	wantCode(t, err, codes.PermissionDenied, "no admin role")
	foreign, _, err := pki.LoadOrCreate(filepath.Join(e.dir, "foreign"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	fc, fk, _ := foreign.IssueClientCert("mallory", pki.AdminRoleURI, time.Hour, filepath.Join(e.dir, "mallory"))
	_, err = e.dial(t, fc, fk).Admin.ListNodes(ctx, &bulwarkv1.ListNodesRequest{})
	if status.Code(err) == codes.OK {
		t.Fatal("an admin certificate from another CA was accepted")
	}

	a := e.admin.Admin
	ls, err := a.ListSecrets(ctx, &bulwarkv1.ListSecretsRequest{})
	if err != nil || len(ls.GetSecrets()) != 2 {
		t.Fatalf("ListSecrets: %v %v", err, ls)
	}
	if strings.Contains(ls.String(), "correct horse") {
		t.Fatal("ListSecrets leaks a value")
	}
	_, err = a.PutSecret(ctx, &bulwarkv1.PutSecretRequest{Name: "../etc", Value: []byte("v")})
	wantCode(t, err, codes.InvalidArgument, "name")
	_, err = a.PutSecret(ctx, &bulwarkv1.PutSecretRequest{Name: "nul", Value: []byte("v"), Metadata: map[string]string{"description": "a\x00b"}})
	wantCode(t, err, codes.InvalidArgument, "metadata: description contains a NUL byte")
	_, err = a.DeleteSecret(ctx, &bulwarkv1.DeleteSecretRequest{Name: "nope"})
	wantCode(t, err, codes.NotFound)
	nodes, err := a.ListNodes(ctx, &bulwarkv1.ListNodesRequest{})
	if err != nil || len(nodes.GetNodes()) != 1 || nodes.GetNodes()[0].GetNodeId() != h.nodeID || nodes.GetNodes()[0].GetLastVerdict() == "" {
		t.Fatalf("ListNodes: %v %v", err, nodes)
	}
	au, err := a.ReadAudit(ctx, &bulwarkv1.ReadAuditRequest{Limit: 3})
	if err != nil || len(au.GetRecords()) != 3 || au.GetNext() != 3 {
		t.Fatalf("ReadAudit: %v %v", err, au)
	}
	all, err := a.ReadAudit(ctx, &bulwarkv1.ReadAuditRequest{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, r := range all.GetRecords() {
		kinds[r.GetKind()]++
		if strings.Contains(r.GetDetail(), "correct horse") || strings.Contains(r.GetDetail(), "tok-123") {
			t.Fatalf("audit record %d holds a secret value", r.GetSeq())
		}
	}
	// Refusals that cost the caller nothing (a forged quote, a replayed
	// nonce, a wrong credential secret) are not written to the audit
	// chain; one after a verified quote (an edited launch log) is.
	var refusedLog, refusedQuote, refusedNonce, refusedActivate bool
	for _, r := range all.GetRecords() {
		if strings.Contains(r.GetDetail(), `"refused"`) {
			refusedLog = refusedLog || strings.Contains(r.GetDetail(), "launch_log:")
			refusedQuote = refusedQuote || strings.Contains(r.GetDetail(), "quote:")
			refusedNonce = refusedNonce || strings.Contains(r.GetDetail(), "nonce:")
			refusedActivate = refusedActivate || strings.Contains(r.GetDetail(), `"activate"`)
		}
	}
	if !refusedLog || refusedQuote || refusedNonce || refusedActivate {
		t.Fatalf("audited refusals: launch log %v (want true), quote %v, nonce %v, activate %v (want false)", refusedLog, refusedQuote, refusedNonce, refusedActivate)
	}
	if kinds["verdict"] == 0 || kinds["release"] == 0 || kinds["enroll"] == 0 || kinds["admin"] == 0 {
		t.Fatalf("audit kinds %v", kinds)
	}
	v, err := a.VerifyAudit(ctx, &bulwarkv1.VerifyAuditRequest{})
	if err != nil || !v.GetOk() || v.GetRecords() != uint64(len(all.GetRecords())) {
		t.Fatalf("VerifyAudit: %v %v", err, v)
	}
	_, err = a.ReadAudit(ctx, &bulwarkv1.ReadAuditRequest{Limit: 5000})
	wantCode(t, err, codes.InvalidArgument, "limit")

	pl, err := a.ListPolicies(ctx, &bulwarkv1.ListPoliciesRequest{})
	if err != nil || len(pl.GetPolicies()) != 1 || pl.GetPolicies()[0].GetName() != testPolicyName {
		t.Fatalf("ListPolicies: %v %v", err, pl)
	}
	// A broken file: the reload reports it and the old policy stays.
	os.WriteFile(filepath.Join(e.policyDir, "broken.yaml"), []byte("apiVersion: bulwark.dev/v1\nname: broken\nbogus: 1\n"), 0o600)
	rr, err := a.ReloadPolicies(ctx, &bulwarkv1.ReloadPoliciesRequest{})
	if err != nil || rr.GetOk() {
		t.Fatalf("ReloadPolicies with a broken file: %v ok=%v", err, rr.GetOk())
	}
	if !strings.Contains(rr.String(), "broken.yaml") {
		t.Fatalf("reload report does not name the broken file: %v", rr)
	}
	if e.watcher.Set().Get(testPolicyName) == nil {
		t.Fatal("old policy not in force after a failed reload")
	}
	os.Remove(filepath.Join(e.policyDir, "broken.yaml"))
	rr, err = a.ReloadPolicies(ctx, &bulwarkv1.ReloadPoliciesRequest{})
	if err != nil || !rr.GetOk() {
		t.Fatalf("ReloadPolicies: %v %v", err, rr)
	}
	_, err = a.DeleteNode(ctx, &bulwarkv1.DeleteNodeRequest{NodeId: "bad"})
	wantCode(t, err, codes.InvalidArgument, "node_id")
}

func serviceChecks(t *testing.T, ctx context.Context, e *env) {
	hr, err := healthpb.NewHealthClient(e.client.Conn()).Check(ctx, &healthpb.HealthCheckRequest{Service: "bulwark.v1.Attestation"})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", err, hr)
	}
	svcs := listServices(t, ctx, e.client)
	for _, want := range []string{"bulwark.v1.Attestation", "bulwark.v1.Admin", "grpc.health.v1.Health"} {
		if !strings.Contains(strings.Join(svcs, " "), want) {
			t.Fatalf("reflection lists %v, missing %s", svcs, want)
		}
	}
	body := httpGet(t, "http://"+e.metrics+"/metrics")
	for _, want := range []string{`bulwark_attestd_attestations_total{verdict="allow"}`, `bulwark_attestd_attestations_total{verdict="deny"}`,
		`bulwark_attestd_rpc_duration_seconds_bucket{code="OK",method="/bulwark.v1.Attestation/Attest"`, `bulwark_attestd_releases_total{result="ok"}`} {
		if !strings.Contains(body, want) {
			t.Fatalf("metrics lack %s", want)
		}
	}
	jwks := httpGet(t, "http://"+e.metrics+"/.well-known/jwks.json")
	if !strings.Contains(jwks, e.srv.Tokens().KeyID()) {
		t.Fatalf("jwks.json: %s", jwks)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return string(b)
}
