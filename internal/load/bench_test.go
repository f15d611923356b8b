package load

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/internal/store/pgtest"
	"github.com/bulwark-project/bulwark/tpm/verify"
)

// benchPerOp is how many attestations one benchmark op drives.
const benchPerOp = 2000

// BenchmarkAttestdEndToEnd drives a real attestd (serve, in process, TLS on
// loopback) with bulwark-load's fleet, flat out at concurrency 64, on the
// embedded store and on PostgreSQL. One op is benchPerOp verified
// attestations (Challenge → quote → Attest); each row reports
// attestations/s, their p99 in ms, and beside them the baseline measured in
// the same run: tpm/verify.VerifyQuote in process on every core
// (verifies/s), and the ratio. The fleet (BULWARK_BENCH_HOSTS hosts,
// default 10,000) is prepared and enrolled once per store, outside the
// timing; after each run every verdict must be in the audit log.
func BenchmarkAttestdEndToEnd(b *testing.B) {
	if testing.Short() {
		b.Skip("starts attestd and enrolls a fleet; skipped with -short")
	}
	hosts := 10000
	if s := os.Getenv("BULWARK_BENCH_HOSTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("BULWARK_BENCH_HOSTS=%q: want a positive number", s)
		}
		hosts = n
	}
	baseline := verifyBaseline(b)
	parent := b
	for _, st := range []string{"embedded", "postgres"} {
		var (
			once  sync.Once
			fleet *Fleet
			ferr  error
		)
		b.Run(fmt.Sprintf("store=%s/hosts=%d", st, hosts), func(b *testing.B) {
			once.Do(func() {
				dsn := ""
				if st == "postgres" {
					dsn = pgtest.DSN(b) // skips when PostgreSQL is not installed
				}
				a, stop, err := launchAttestd(dsn)
				if err != nil {
					ferr = err
					return
				}
				parent.Cleanup(func() { stop() })
				fleet, ferr = NewFleet(context.Background(), Config{
					Addr: a.addr, CAFile: a.ca, CertFile: a.cert, KeyFile: a.key, EKCADir: a.ekCADir,
					Hosts: hosts, Concurrency: 64, Duration: MaxDuration,
				})
				if fleet != nil {
					parent.Cleanup(fleet.Close)
				}
				if ferr == nil && fleet.Enroll.OK != uint64(hosts) {
					ferr = fmt.Errorf("%d of %d hosts enrolled: %v", fleet.Enroll.OK, hosts, fleet.Enroll.Errors)
				}
				if ferr == nil {
					b.Logf("%s: %d hosts prepared in %.1fs, enrolled at %.0f/s", st, hosts, fleet.PrepareSeconds, fleet.Enroll.PerSecond)
				}
			})
			if ferr != nil {
				b.Fatal(ferr)
			}
			b.ResetTimer()
			d := fleet.Drive(context.Background(), Drive{Count: benchPerOp * b.N})
			b.StopTimer()
			if n := errorsIn(d.Attest); n > 0 || d.Attest.OK != uint64(benchPerOp*b.N) {
				b.Fatalf("%d/%d attestations ok, errors %v", d.Attest.OK, benchPerOp*b.N, d.Attest.Errors)
			}
			a, err := fleet.CheckAudit(context.Background())
			if err != nil || !a.OK() {
				b.Fatalf("audit: %v %v", a, err)
			}
			b.ReportMetric(d.Attest.PerSecond, "attestations/s")
			b.ReportMetric(d.Attest.Latency.P99, "p99-ms")
			b.ReportMetric(baseline, "verify-baseline/s")
			b.ReportMetric(d.Attest.PerSecond/baseline, "e2e/verify")
		})
	}
}

func errorsIn(p Phase) (n uint64) {
	for _, v := range p.Errors {
		n += v
	}
	return n
}

// verifyBaseline measures tpm/verify.VerifyQuote on softtpm quotes in
// process, on every core: the verification work alone, without network,
// store, policy or tokens.
func verifyBaseline(b *testing.B) float64 {
	h := softtpm.NewHost(mustTPM(b), 0)
	if _, err := h.Launch(softtpm.SimulatedArtifacts(), DefaultPolicy, time.Now()); err != nil {
		b.Fatal(err)
	}
	nonce := []byte("baseline-nonce-0123456789abcdef!")
	ev, err := h.Attest([]int{0, 4, 7, softtpm.DefaultLaunchPCR}, nonce)
	if err != nil {
		b.Fatal(err)
	}
	ak := h.TPM.AKPublic()
	const n = 4000
	var left atomic.Int64
	left.Store(n)
	var failed atomic.Bool
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if _, err := verify.VerifyQuote(ak, ev.Quote, ev.Signature, nonce, ev.PCRs); err != nil {
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() {
		b.Fatal("baseline: VerifyQuote rejected a softtpm quote")
	}
	return n / time.Since(start).Seconds()
}

func mustTPM(b *testing.B) *softtpm.TPM {
	t, err := softtpm.New(softtpm.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return t
}
