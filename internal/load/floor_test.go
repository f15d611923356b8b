package load

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/enclave"
	"github.com/bulwark-project/bulwark/internal/attestd"
	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/bulwark-project/bulwark/token"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
)

// verifyFloor measures, in this process, what
// internal/attestd's BenchmarkVerifyAttestationInProcess/verify-only
// measures: attestd.Server.VerifyAttestation called directly on the
// embedded store, one call at a time — validation, node lookup, the
// nonce consumed, the quote's signature, the launch log replayed — with
// each request (nonce and software-TPM quote) prepared outside the timing.
// It returns the mean CPU µs per call over n calls: the floor that attestd's
// CPU per attestation is compared with, measured in the same run.
func verifyFloor(tb testing.TB, n int) float64 {
	tb.Helper()
	ctx := context.Background()
	// Not tb.TempDir: a benchmark's name ("store=embedded/...") makes a
	// path the store would take for a connection string.
	dir, err := os.MkdirTemp("", "bulwark-floor-")
	if err != nil {
		tb.Fatal(err)
	}
	defer os.RemoveAll(dir)
	st, err := embedded.Open(ctx, filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	defer st.Close()
	if err := os.MkdirAll(filepath.Join(dir, "vault"), 0o700); err != nil {
		tb.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	v, err := enclave.New(ctx, enclave.NewFileBackend(filepath.Join(dir, "vault"), true, quiet), st, true, enclave.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	defer v.Close()
	pdir := filepath.Join(dir, "policies")
	var pol bytes.Buffer
	if err := WritePolicy(&pol, "", "", nil); err != nil {
		tb.Fatal(err)
	}
	if err := os.MkdirAll(pdir, 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pdir, "bulwark-load.yaml"), pol.Bytes(), 0o600); err != nil {
		tb.Fatal(err)
	}
	w := policy.NewWatcher(pdir, policy.WatcherOptions{})
	if err := w.Reload(); err != nil {
		tb.Fatal(err)
	}
	tokens, err := token.LoadOrCreateKey(filepath.Join(dir, "token.key"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tp := mustTPM(tb)
	ek, err := verify.ParseEKPublic(tp.EKPublic())
	if err != nil {
		tb.Fatal(err)
	}
	node := limits.NodeID(ek.Raw)
	srv, err := attestd.New(attestd.Config{Store: st, Vault: v, Policies: w, Tokens: tokens,
		EKAllow: []string{node}, Logger: quiet})
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
	l, err := h.Launch(softtpm.SimulatedArtifacts(), DefaultPolicy, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	// The calls run on one OS thread whose own CPU clock times them: on a
	// busy shared machine wall time would count the waits for a core too,
	// inflating the floor and flattering the ratio to it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var took time.Duration
	for i := 0; i < n; i++ {
		ch, err := srv.Challenge(ctx, &bulwarkv1.ChallengeRequest{NodeId: node})
		if err != nil {
			tb.Fatal(err)
		}
		evd, err := h.Attest([]int{0, 4, 7, limits.DefaultLaunchPCR}, ch.GetNonce())
		if err != nil {
			tb.Fatal(err)
		}
		req := &bulwarkv1.AttestRequest{NodeId: node, Nonce: ch.GetNonce(), Quote: evd.Quote, Signature: evd.Signature,
			Pcrs: make(map[uint32][]byte, len(evd.PCRs)), LaunchLog: evd.Log, SandboxId: l.Event.SandboxID}
		for i, v := range evd.PCRs {
			req.Pcrs[uint32(i)] = v
		}
		start := threadCPUTime(tb)
		_, err = srv.VerifyAttestation(ctx, req)
		took += threadCPUTime(tb) - start
		if err != nil {
			tb.Fatal(err)
		}
	}
	return float64(took.Nanoseconds()) / float64(n) / 1e3
}

// TestVerifyFloor checks that the floor's setup verifies genuine
// attestations (the benchmark would otherwise fail only when run).
func TestVerifyFloor(t *testing.T) {
	if us := verifyFloor(t, 3); us <= 0 {
		t.Fatalf("floor %v µs", us)
	}
}
