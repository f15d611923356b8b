package attestd

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
)

// BenchmarkVerifyAttestationInProcess is the floor of attestd's hot path:
// one full Attest call without network — validation, node lookup, atomic
// nonce consumption, quote verification, launch log replay, policy
// evaluation, token signing and the durable verdict + audit record — on
// the embedded store. The baseline measured in the same run is the bare
// quote signature check (tpm/verify.VerifyQuote), the one step no
// implementation can skip; "x-quote-verify" is the ratio. Requests are
// prepared (nonce + software-TPM quote) with the timer stopped.
func BenchmarkVerifyAttestationInProcess(b *testing.B) {
	// full-attest-parallel issues all its nonces to the one host before the
	// timer starts, far past the per-node limit a real host never nears.
	p := newInprocStore(b, store.Options{MaxNoncesPerNode: 1 << 20}, nil)
	ctx := context.Background()
	ak := p.host.TPM.AKPublic()
	pcrs := func(r *bulwarkv1.AttestRequest) map[int][]byte {
		m := map[int][]byte{}
		for i, v := range r.Pcrs {
			m[int(i)] = v
		}
		return m
	}

	// Baseline: the quote signature check alone.
	seed := p.request(b)
	seedPCRs := pcrs(seed)
	const baseN = 300
	start := time.Now()
	for i := 0; i < baseN; i++ {
		if _, err := verify.VerifyQuote(ak, seed.Quote, seed.Signature, seed.Nonce, seedPCRs); err != nil {
			b.Fatal(err)
		}
	}
	base := float64(time.Since(start).Nanoseconds()) / baseN

	b.Run("verify-only", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			req := p.request(b)
			b.StartTimer()
			if _, err := p.srv.VerifyAttestation(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "µs/verify")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/base, "x-quote-verify")
	})
	b.Run("full-attest", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			req := p.request(b)
			b.StartTimer()
			r, err := p.srv.Attest(ctx, req)
			if err != nil || r.Verdict != bulwarkv1.Verdict_VERDICT_ALLOW {
				b.Fatal(err, r.GetReasons())
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "µs/attest")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/base, "x-quote-verify")
	})
	// Throughput with concurrent callers (the store batches commits):
	// requests are prepared before the timer starts.
	b.Run("full-attest-parallel", func(b *testing.B) {
		reqs := make(chan *bulwarkv1.AttestRequest, b.N)
		for i := 0; i < b.N; i++ {
			reqs <- p.request(b)
		}
		close(reqs)
		b.SetParallelism(8)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r, err := p.srv.Attest(ctx, <-reqs)
				if err != nil || r.Verdict != bulwarkv1.Verdict_VERDICT_ALLOW {
					b.Error(err, r.GetReasons())
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "attest/s")
	})
	b.Run("log-replay-only", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			lg, err := measure.ParseLog(seed.LaunchLog)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := measure.Replay(lg, limits.DefaultLaunchPCR, measure.SHA256); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Logf("baseline quote verify: %.1f µs/op", base/1e3)
}

// BenchmarkAttestOverTLS is Attest through the real gRPC server over TLS
// on loopback, with concurrent callers (requests prepared beforehand), on
// the embedded store: what one attestd serves, network stack included.
// The in-process figure of the same run is the baseline ("x-inprocess").
func BenchmarkAttestOverTLS(b *testing.B) {
	tp, err := softtpm.New(softtpm.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ek, _ := verify.ParseEKPublic(tp.EKPublic())
	node := limits.NodeID(ek.Raw)
	e := newEnv(b, envOptions{storeKind: "embedded", ekAllow: []string{node}, manyNonces: true, peerRate: -1}) // b.N nonces issued up front, from one address
	ctx := context.Background()
	os.WriteFile(filepath.Join(e.policyDir, "sim.yaml"), []byte(simPolicyYAML()), 0o600)
	if err := e.watcher.Reload(); err != nil {
		b.Fatal(err)
	}
	e.putSecrets(b)
	enr, err := e.client.Enroll(ctx, tp.EKPublic(), nil, tp.AKPublic())
	if err != nil {
		b.Fatal(err)
	}
	secret, _ := tp.ActivateCredential(enr.GetCredentialBlob(), enr.GetEncryptedSecret())
	if err := e.client.Activate(ctx, node, secret); err != nil {
		b.Fatal(err)
	}
	h := softtpm.NewHost(tp, limits.DefaultLaunchPCR)
	l, err := h.Launch(softtpm.SimulatedArtifacts(), "sim", e.clock.Now())
	if err != nil {
		b.Fatal(err)
	}
	prepare := func(n int) chan *bulwarkv1.AttestRequest {
		reqs := make(chan *bulwarkv1.AttestRequest, n)
		for i := 0; i < n; i++ {
			nonce, _, err := e.client.Challenge(ctx, node)
			if err != nil {
				b.Fatal(err)
			}
			evd, err := h.Attest(quotedPCRs, nonce)
			if err != nil {
				b.Fatal(err)
			}
			req := &bulwarkv1.AttestRequest{NodeId: node, Nonce: nonce, Quote: evd.Quote, Signature: evd.Signature,
				Pcrs: map[uint32][]byte{}, LaunchLog: evd.Log, SandboxId: l.Event.SandboxID}
			for i, v := range evd.PCRs {
				req.Pcrs[uint32(i)] = v
			}
			reqs <- req
		}
		close(reqs)
		return reqs
	}
	// Baseline in the same run: the same server called in process.
	const baseN = 300
	base := prepare(baseN)
	start := time.Now()
	for r := range base {
		if _, err := e.srv.Attest(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	baseRate := baseN / time.Since(start).Seconds()

	reqs := prepare(b.N)
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r, err := e.client.Attest(ctx, <-reqs)
			if err != nil || r.Verdict != bulwarkv1.Verdict_VERDICT_ALLOW {
				b.Error(err, r.GetReasons())
				return
			}
		}
	})
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "attest/s")
	b.ReportMetric(rate/baseRate, "x-inprocess-serial")
}
