package load

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
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

// BenchmarkAttestdEndToEnd drives a real attestd (serve, TLS on loopback,
// a process of its own: this test binary run as attestd) with
// bulwark-load's fleet at concurrency 64, on the embedded store and on
// PostgreSQL: flat out (load=max: the throughput) and, on the embedded
// store, at TargetRate (load=rate2000: the latency a fleet sees at the
// goal, measured from each attestation's scheduled start) and flat out
// with a signed token asked for with every verdict (load=max+tokens; the
// other rows set omit_token, as the launcher does). One op is benchPerOp
// verified attestations (Challenge → quote → Attest); each row reports
// attestations/s, their p99 in ms, and the CPU each attestation cost,
// read from each process's own accounting: attestd's
// (attestd-cpu-µs/attestation, from /proc/PID/stat), the load
// generator's (load-cpu-µs/attestation, getrusage of this process) and
// both (cpu-µs/attestation). Beside them, baselines measured in the same
// run, just before the row: the in-process verification floor
// (floor-µs/verify: attestd.Server.VerifyAttestation called directly, as
// internal/attestd's BenchmarkVerifyAttestationInProcess/verify-only
// does) with attestd's ratio to it (attestd/floor), and
// tpm/verify.VerifyQuote on every core (verify-baseline/s, e2e/verify).
// The fleet (BULWARK_BENCH_HOSTS hosts, default 10,000) is prepared and
// enrolled once per store, outside the timing; after each run every
// verdict must be in the audit log.
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
			pid  int // attestd's
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
					f, pid, ferr = benchFleet(parent, st, dsn, hosts)
				})
				switch {
				case ferr != nil:
					b.Fatal(ferr)
				case f == nil:
					b.Skip("no fleet: the first run of this store was skipped")
				}
				n := benchPerOp * b.N
				floor := verifyFloor(b, floorN)
				b.ResetTimer()
				cpu0, acpu0 := cpuTime(), procCPUTime(b, pid)
				d := f.Drive(context.Background(), Drive{Count: n, Rate: rate, Tokens: v.tokens})
				cpu, acpu := cpuTime()-cpu0, procCPUTime(b, pid)-acpu0
				b.StopTimer()
				if e := errorsIn(d.Attest); e > 0 || d.Attest.OK != uint64(n) {
					b.Fatalf("%d/%d attestations ok, errors %v", d.Attest.OK, n, d.Attest.Errors)
				}
				if a, err := f.CheckAudit(context.Background()); err != nil || !a.OK() {
					b.Fatalf("audit: %v %v", a, err)
				}
				b.ReportMetric(d.Attest.PerSecond, "attestations/s")
				perAtt := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(n) }
				b.ReportMetric(perAtt(cpu+acpu), "cpu-µs/attestation")
				b.ReportMetric(perAtt(acpu), "attestd-cpu-µs/attestation")
				b.ReportMetric(perAtt(cpu), "load-cpu-µs/attestation")
				b.ReportMetric(floor, "floor-µs/verify")
				b.ReportMetric(perAtt(acpu)/floor, "attestd/floor")
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

// benchFleet starts attestd (a child process, on PostgreSQL at dsn or else the
// embedded store; stopped when b ends) and prepares and enrolls a fleet of
// hosts against it.
func benchFleet(b *testing.B, st, dsn string, hosts int) (f *Fleet, attestdPID int, err error) {
	a, stop, err := launchAttestd(dsn, true)
	if err != nil {
		return nil, 0, err
	}
	b.Cleanup(func() { stop() })
	f, err = NewFleet(context.Background(), Config{
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
	return f, a.pid, err
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

func mustTPM(b testing.TB) *softtpm.TPM {
	t, err := softtpm.New(softtpm.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return t
}

// floorN is how many calls verifyFloor averages before each row.
const floorN = 1000

// cpuTime is the CPU time (user and system) this process has used: the
// load generator's (attestd runs in a process of its own).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPUTime is the CPU time (user and system, all threads) the process
// pid has used, from /proc/PID/stat (fields 14 and 15, in clock ticks of
// 1/100 s on Linux: 1 s of a row's CPU is read to 1 %).
func procCPUTime(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// fields are counted after its closing one.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		tb.Fatalf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if len(f) < 13 {
		tb.Fatalf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var ticks int64
	for _, s := range f[11:13] { // utime, stime
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			tb.Fatalf("/proc/%d/stat: %v", pid, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * (time.Second / clockTicks)
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100
