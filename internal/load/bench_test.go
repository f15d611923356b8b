package load

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/internal/store/pgtest"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
)

// benchPerOp is how many attestations one benchmark op drives.
const benchPerOp = 2000

// TargetRate is the attestd throughput goal on a 2-core machine with the
// load generator on the same cores (docs/performance.md): the rate=
// benchmarks measure latency while attestations start at this rate.
const TargetRate = 2000

// BenchmarkAttestdEndToEnd drives a real attestd (serve, in process, TLS on
// loopback) with bulwark-load's fleet at concurrency 64, on the embedded
// store and on PostgreSQL: flat out (load=max: the throughput) and, on the
// embedded store, at TargetRate (load=rate2000: the latency a fleet sees at
// the goal, measured from each attestation's scheduled start) and flat out
// with a signed token asked for with every verdict (load=max+tokens; the
// other rows set omit_token, as the launcher does). One op is benchPerOp verified
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
			once sync.Once
			f    *Fleet
			ferr error
		)
		type variant struct {
			rate   float64
			tokens bool
		}
		loads := []variant{{0, false}, {TargetRate, false}, {0, true}}
		if st == "postgres" {
			loads = loads[:1] // compared with the embedded store flat out only
		}
		for _, v := range loads {
			rate := v.rate
			load := "max"
			if rate > 0 {
				load = fmt.Sprintf("rate%.0f", rate)
			}
			if v.tokens {
				load += "+tokens"
			}
			b.Run(fmt.Sprintf("store=%s/hosts=%d/load=%s", st, hosts, load), func(b *testing.B) {
				once.Do(func() {
					dsn := ""
					if st == "postgres" {
						dsn = pgtest.DSN(b) // skips when PostgreSQL is not installed
					}
					f, ferr = benchFleet(parent, st, dsn, hosts)
				})
				switch {
				case ferr != nil:
					b.Fatal(ferr)
				case f == nil:
					b.Skip("no fleet: the first run of this store was skipped")
				}
				n := benchPerOp * b.N
				b.ResetTimer()
				cpu0 := cpuTime()
				d := f.Drive(context.Background(), Drive{Count: n, Rate: rate, Tokens: v.tokens})
				cpu := cpuTime() - cpu0
				b.StopTimer()
				if e := errorsIn(d.Attest); e > 0 || d.Attest.OK != uint64(n) {
					b.Fatalf("%d/%d attestations ok, errors %v", d.Attest.OK, n, d.Attest.Errors)
				}
				if a, err := f.CheckAudit(context.Background()); err != nil || !a.OK() {
					b.Fatalf("audit: %v %v", a, err)
				}
				b.ReportMetric(d.Attest.PerSecond, "attestations/s")
				b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/attestation")
				b.ReportMetric(d.Attest.Latency.P50, "p50-ms")
				b.ReportMetric(d.Attest.Latency.P90, "p90-ms")
				b.ReportMetric(d.Attest.Latency.P99, "p99-ms")
				b.ReportMetric(d.RPC["attest"].P99, "attest-rpc-p99-ms")
				b.ReportMetric(baseline, "verify-baseline/s")
				b.ReportMetric(d.Attest.PerSecond/baseline, "e2e/verify")
			})
		}
	}
}

// benchFleet starts attestd (in process, on PostgreSQL at dsn or else the
// embedded store; stopped when b ends) and prepares and enrolls a fleet of
// hosts against it.
func benchFleet(b *testing.B, st, dsn string, hosts int) (*Fleet, error) {
	a, stop, err := launchAttestd(dsn)
	if err != nil {
		return nil, err
	}
	b.Cleanup(func() { stop() })
	f, err := NewFleet(context.Background(), Config{
		Addr: a.addr, CAFile: a.ca, CertFile: a.cert, KeyFile: a.key, EKCADir: a.ekCADir,
		Hosts: hosts, Concurrency: 64, Duration: MaxDuration,
	})
	if f != nil {
		b.Cleanup(f.Close)
	}
	if err == nil && f.Enroll.OK != uint64(hosts) {
		err = fmt.Errorf("%d of %d hosts enrolled: %v", f.Enroll.OK, hosts, f.Enroll.Errors)
	}
	if err == nil {
		b.Logf("%s: %d hosts prepared in %.1fs, enrolled at %.0f/s", st, hosts, f.PrepareSeconds, f.Enroll.PerSecond)
	}
	return f, err
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
	ev, err := h.Attest([]int{0, 4, 7, limits.DefaultLaunchPCR}, nonce)
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

// cpuTime is the CPU time (user and system) this process has used: attestd
// and the load generator together, as they share the cores.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
