package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/internal/attestdcmd"
	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/internal/store/pgtest"
	"github.com/bulwark-project/bulwark/policy"
)

func TestMain(m *testing.M) {
	if os.Getenv(attestdChildEnv) == "1" {
		os.Exit(attestdChild())
	}
	pgtest.Main(m)
}

// attestdChildEnv, set to 1, makes this test binary run as "attestd"
// with its arguments: how the benchmark starts attestd as a process of
// its own, whose CPU time the kernel accounts apart from the load
// generator's.
const attestdChildEnv = "BULWARK_LOAD_TEST_ATTESTD"

// attestdChild is cmd/attestd's main, in this test binary.
func attestdChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return attestdcmd.Program.Main(ctx, &cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, Stdin: strings.NewReader("")}, os.Args[1:])
}

func TestHistogram(t *testing.T) {
	var h histogram
	for v := 1; v <= 10000; v++ {
		h.record(time.Duration(v) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want uint64
	}{{0.5, 5000}, {0.9, 9000}, {0.99, 9900}, {1, 10000}} {
		got := h.quantile(c.q)
		if got < c.want || float64(got) > float64(c.want)*(1+1.0/subCount) {
			t.Errorf("quantile(%v) = %d µs, want %d within %.1f%%", c.q, got, c.want, 100.0/subCount)
		}
	}
	if h.max != 10000 || h.n != 10000 {
		t.Errorf("max %d n %d", h.max, h.n)
	}
	// Every value lands in a bucket whose top is >= it and within precision.
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 129, 1000, 1 << 20, 1<<40 + 12345, 1<<63 + 1} {
		i := bucketOf(v)
		top := bucketTop(i)
		if top < v || (v >= subCount && float64(top-v) > float64(v)/subCount) || i >= numBuckets {
			t.Errorf("value %d: bucket %d top %d", v, i, top)
		}
	}
	var m histogram
	m.merge(&h)
	m.merge(&h)
	if m.n != 20000 || m.quantile(0.5) != h.quantile(0.5) {
		t.Error("merge changed the distribution")
	}
	var empty histogram
	if s := empty.summary(); s.P99 != 0 || s.Count != 0 {
		t.Errorf("empty summary %+v", s)
	}
}

func TestWrittenPolicyParses(t *testing.T) {
	var b bytes.Buffer
	if err := WritePolicy(&b, "", "", nil); err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse("bulwark-load.yaml", b.Bytes(), policy.LoadOptions{})
	if err != nil {
		t.Fatalf("the written policy does not parse:\n%s\n%v", b.String(), err)
	}
	if p.Name != DefaultPolicy || len(p.Secrets) != 1 || p.Secrets[0] != DefaultSecret {
		t.Errorf("policy %q secrets %v", p.Name, p.Secrets)
	}
	vals := softtpm.HostPCRValues(nil)
	for _, i := range defaultHostPCRs {
		if len(p.HostPCRs[i]) != 1 || !bytes.Equal(p.HostPCRs[i][0], vals[i]) {
			t.Errorf("host PCR %d not pinned to the simulated value", i)
		}
	}
}

func TestConfigRejects(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no addr", Config{CAFile: "x", CertFile: "c", KeyFile: "k"}, "--addr"},
		{"no ca", Config{Addr: "a:1", CertFile: "c", KeyFile: "k"}, "--ca"},
		{"no admin cert", Config{Addr: "a:1", CAFile: "x"}, "--cert"},
		{"cert without key", Config{Addr: "a:1", CAFile: "x", CertFile: "c"}, "--key"},
		{"negative rate", Config{Addr: "a:1", CAFile: "x", CertFile: "c", KeyFile: "k", Rate: -1}, "--rate"},
		{"duration too long", Config{Addr: "a:1", CAFile: "x", CertFile: "c", KeyFile: "k", Duration: 2 * time.Hour}, "--duration"},
		{"hosts", Config{Addr: "a:1", CAFile: "x", CertFile: "c", KeyFile: "k", Hosts: -3}, "--hosts"},
		{"NaN rate", Config{Addr: "a:1", CAFile: "x", CertFile: "c", KeyFile: "k", Rate: math.NaN()}, "--rate NaN"},
		{"infinite rate", Config{Addr: "a:1", CAFile: "x", CertFile: "c", KeyFile: "k", Rate: math.Inf(1)}, "--rate +Inf"},
		{"minus infinite rate", Config{Addr: "a:1", CAFile: "x", CertFile: "c", KeyFile: "k", Rate: math.Inf(-1)}, "--rate -Inf"},
		{"rate too small to schedule", Config{Addr: "a:1", CAFile: "x", CertFile: "c", KeyFile: "k", Rate: 1e-12}, "--rate 1e-12 schedules less than one attestation in --duration 30s"},
		{"negative timeout", Config{Addr: "a:1", CAFile: "x", CertFile: "c", KeyFile: "k", RequestTimeout: -time.Second}, "--timeout -1s"},
		{"launch PCR", Config{Addr: "a:1", CAFile: "x", CertFile: "c", KeyFile: "k", LaunchPCR: 24}, "--launch-pcr 24: want 1..23"},
		{"negative launch PCR", Config{Addr: "a:1", CAFile: "x", CertFile: "c", KeyFile: "k", LaunchPCR: -1}, "--launch-pcr -1"},
		{"rate under one per duration", Config{Addr: "a:1", CAFile: "x", CertFile: "c", KeyFile: "k", Rate: 0.1, Duration: 5 * time.Second}, "want at least 0.2 a second"},
	} {
		_, err := Run(context.Background(), c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one naming %s", c.name, err, c.want)
		}
	}
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"one attestation per duration", Config{Addr: "a:1", CAFile: "x", CertFile: "c", KeyFile: "k", Rate: 0.2, Duration: 5 * time.Second}},
		{"flat out", Config{Addr: "a:1", CAFile: "x", CertFile: "c", KeyFile: "k"}},
	} {
		if err := c.cfg.setDefaults(); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestSlot(t *testing.T) {
	for _, c := range []struct {
		k      int64
		rate   float64
		length time.Duration
		want   time.Duration
		ok     bool
	}{
		{0, 2, 30 * time.Second, 0, true},
		{3, 2, 30 * time.Second, 1500 * time.Millisecond, true},
		{59, 2, 30 * time.Second, 29500 * time.Millisecond, true},
		{60, 2, 30 * time.Second, 0, false}, // at the end: not in the phase
		{0, 1e-12, 30 * time.Second, 0, true},
		{1, 1e-12, 30 * time.Second, 0, false}, // 1e21 ns: over time.Duration's range
		{1 << 62, 1e-300, MaxDuration, 0, false},
		{1 << 40, 1e6, MaxDuration, 0, false},
	} {
		at, ok := slot(c.k, c.rate, c.length)
		if at != c.want || ok != c.ok {
			t.Errorf("slot(%d, %v, %v) = %v, %v; want %v, %v", c.k, c.rate, c.length, at, ok, c.want, c.ok)
		}
	}
}

// lineWriter hands each line written to it to a channel (the first lines
// only) and keeps the tail for failure messages.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for _, l := range strings.SplitAfter(string(p), "\n") {
		select {
		case w.lines <- l:
		default:
		}
	}
	return len(p), nil
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.buf.String()
	if len(s) > 4000 {
		s = s[len(s)-4000:]
	}
	return s
}

// attestdFixture is a real attestd (the serve command, in process or as a
// child process) over TLS on loopback, with the load policy installed and
// the load EK CA as its EK root.
type attestdFixture struct {
	addr, ca, cert, key, ekCADir string
	pid                          int // the child process; 0 in process
}

// startAttestd starts attestd serve for the test; with a PostgreSQL dsn
// it uses that store instead of the embedded one.
func startAttestd(t testing.TB, dsn string) *attestdFixture {
	t.Helper()
	a, stop, err := launchAttestd(dsn, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return a
}

// launchAttestd starts attestd serve (over TLS on loopback; in process,
// or with child as a process of its own: this test binary run again) with
// the load policy, an admin certificate and the load EK CA as its EK root;
// stop stops it and removes its files.
func launchAttestd(dsn string, child bool) (a *attestdFixture, stop func() error, err error) {
	dir, err := os.MkdirTemp("", "bulwark-load-test-")
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	data, pols, certs, ekca := filepath.Join(dir, "data"), filepath.Join(dir, "policies"), filepath.Join(dir, "certs"), filepath.Join(dir, "ekca")
	for _, d := range []string{pols, certs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, nil, err
		}
	}
	if _, err := softtpm.LoadOrCreateEKCA(ekca, time.Now()); err != nil {
		return nil, nil, err
	}
	var pol bytes.Buffer
	if err := WritePolicy(&pol, "", "", nil); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(filepath.Join(pols, "bulwark-load.yaml"), pol.Bytes(), 0o600); err != nil {
		return nil, nil, err
	}

	var out, errb bytes.Buffer
	env := &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader("")}
	if code := attestdcmd.Program.Main(context.Background(), env, []string{"admin-cert", "--data", data, "--name", "load", "-o", certs, "--init-ca"}); code != 0 {
		return nil, nil, fmt.Errorf("attestd admin-cert: exit %d: %s", code, errb.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	logw := &lineWriter{lines: make(chan string, 256)}
	done := make(chan int, 1)
	args := []string{
		"serve", "--data", data, "--listen", "127.0.0.1:0", "--metrics-addr", "",
		"--vault", "file", "--allow-insecure-file-vault", "--policies", pols,
		"--ek-ca", filepath.Join(ekca, softtpm.EKCACertFile), "--log-level", "warn",
		"--peer-rate", "0", // every simulated host calls from this one address
	}
	if dsn != "" {
		args = append(args, "--db", dsn)
	}
	pid := 0
	if child {
		cmd := exec.CommandContext(ctx, os.Args[0], args...)
		cmd.Env = append(os.Environ(), attestdChildEnv+"=1")
		cmd.Stdout, cmd.Stderr = io.Discard, logw
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 30 * time.Second
		dieWithParent(cmd)
		if err := cmd.Start(); err != nil {
			cancel()
			return nil, nil, fmt.Errorf("starting attestd: %w", err)
		}
		pid = cmd.Process.Pid
		go func() {
			cmd.Wait()
			done <- cmd.ProcessState.ExitCode()
		}()
	} else {
		go func() {
			done <- attestdcmd.Program.Main(ctx, &cli.Env{Stdout: io.Discard, Stderr: logw, Stdin: strings.NewReader("")}, args)
		}()
	}
	stop = func() error {
		cancel()
		defer os.RemoveAll(dir)
		select {
		case <-done:
			return nil
		case <-time.After(time.Minute):
			return errors.New("attestd did not stop within a minute")
		}
	}
	var addr string
	timeout := time.After(60 * time.Second)
	for addr == "" {
		select {
		case l := <-logw.lines:
			if _, a, ok := strings.Cut(l, "attestd: serving on "); ok {
				addr = strings.TrimSpace(a)
			}
		case code := <-done:
			cancel()
			return nil, nil, fmt.Errorf("attestd serve exited %d:\n%s", code, logw.String())
		case <-timeout:
			stop()
			return nil, nil, fmt.Errorf("attestd did not start within 60s:\n%s", logw.String())
		}
	}
	return &attestdFixture{addr: addr, ca: filepath.Join(certs, "ca.crt"), cert: filepath.Join(certs, "load.crt"),
		key: filepath.Join(certs, "load.key"), ekCADir: ekca, pid: pid}, stop, nil
}

// TestLoadAgainstAttestd runs a short, bounded load (at most a few hundred
// attestations) against a real attestd and checks that nothing is lost;
// then that the check does catch a verdict that is not in the log.
func TestLoadAgainstAttestd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts attestd and runs a load; skipped with -short")
	}
	a := startAttestd(t, "")
	cfg := Config{
		Addr: a.addr, CAFile: a.ca, CertFile: a.cert, KeyFile: a.key, EKCADir: a.ekCADir,
		Hosts: 24, Concurrency: 8, Rate: 150, Duration: 2 * time.Second, Release: true,
	}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		if res != nil {
			var b strings.Builder
			PrintText(&b, res)
			t.Fatalf("load run: %v\n%s", err, b.String())
		}
		t.Fatalf("load run: %v", err)
	}
	var report strings.Builder
	PrintText(&report, res)
	t.Logf("load report:\n%s", report.String())
	if res.Enroll.OK != 24 || res.Attest.OK == 0 || res.Attest.OK > 310 || res.TotalErrors != 0 {
		t.Errorf("enrolled %d, attested %d (of %d), errors %d", res.Enroll.OK, res.Attest.OK, res.Attest.Count, res.TotalErrors)
	}
	if res.Verdicts["allow"] != res.Attest.OK || res.Verdicts["deny"] != 0 {
		t.Errorf("verdicts %v for %d attestations", res.Verdicts, res.Attest.OK)
	}
	if res.Audit == nil || !res.Audit.OK() || res.Audit.Found != int(res.Attest.OK) || res.Audit.Expected != int(res.Attest.OK) {
		t.Fatalf("audit check: %+v", res.Audit)
	}
	if !strings.HasPrefix(res.Audit.String(), "nothing lost: ") {
		t.Errorf("audit line %q", res.Audit)
	}

	// The check must detect a verdict attestd does not have.
	c, err := attestclient.Dial(attestclient.Options{Addr: a.addr, CAFile: a.ca, CertFile: a.cert, KeyFile: a.key})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ids := []string{"att-00000000000000000000000000000000"}
	chk, err := CheckAudit(context.Background(), c.Admin, 0, ids)
	if err != nil {
		t.Fatal(err)
	}
	if chk.OK() || chk.MissingCount != 1 || chk.Missing[0] != ids[0] || !strings.HasPrefix(chk.String(), "LOST: 0/1") {
		t.Errorf("a made-up verdict id was not reported missing: %+v", chk)
	}
	// And finds a real one from the whole log.
	whole, err := CheckAudit(context.Background(), c.Admin, 0, nil)
	if err != nil || !whole.OK() || whole.RecordsRead < uint64(res.Attest.OK) {
		t.Errorf("reading the whole log: %+v, %v", whole, err)
	}

	// The command line, with --json for the bench script.
	var out, errb bytes.Buffer
	code := Main(context.Background(), []string{"--addr", a.addr, "--ca", a.ca, "--cert", a.cert, "--key", a.key,
		"--ek-ca", a.ekCADir, "--hosts", "6", "--concurrency", "3", "--rate", "60", "--duration", "1s", "--json"}, &out, &errb)
	if code != 0 {
		t.Fatalf("bulwark-load exit %d: %s\n%s", code, errb.String(), out.String())
	}
	var j map[string]any
	if err := json.Unmarshal(out.Bytes(), &j); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out.String())
	}
	for _, k := range []string{"attestations_per_second", "p99_ms", "errors", "ok", "audit"} {
		if _, ok := j[k]; !ok {
			t.Errorf("--json output lacks %q", k)
		}
	}
	if j["ok"] != true {
		t.Errorf("--json ok = %v", j["ok"])
	}

	// A rate too low to schedule a second attestation within the phase
	// (its interval is beyond time.Duration's range) starts one, not a
	// flat-out run.
	f, err := NewFleet(context.Background(), Config{Addr: a.addr, CAFile: a.ca, CertFile: a.cert, KeyFile: a.key,
		EKCADir: a.ekCADir, Hosts: 4, Concurrency: 4, SkipAudit: true})
	if err != nil {
		t.Fatal(err)
	}
	d := f.Drive(context.Background(), Drive{Rate: 1e-12, Duration: time.Second})
	f.Close()
	if d.Attest.Count != 1 {
		t.Errorf("Drive at 1e-12/s for 1s: %d attestations, want 1", d.Attest.Count)
	}

	// A result that cannot be written fails the run.
	for _, format := range [][]string{{"--json"}, nil} {
		errb.Reset()
		code = Main(context.Background(), append([]string{"--addr", a.addr, "--ca", a.ca, "--cert", a.cert, "--key", a.key,
			"--ek-ca", a.ekCADir, "--hosts", "2", "--concurrency", "2", "--count", "2"}, format...), failWriter{}, &errb)
		if code != 1 || !strings.Contains(errb.String(), "disk full") {
			t.Errorf("%v to a failing stdout: exit %d, %s", format, code, errb.String())
		}
	}
}

// TestLoadAgainstAttestdPostgres is the same short load on attestd's
// PostgreSQL store.
func TestLoadAgainstAttestdPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and attestd and runs a load; skipped with -short")
	}
	a := startAttestd(t, pgtest.DSN(t))
	res, err := Run(context.Background(), Config{
		Addr: a.addr, CAFile: a.ca, CertFile: a.cert, KeyFile: a.key, EKCADir: a.ekCADir,
		Hosts: 16, Concurrency: 8, Rate: 100, Duration: 2 * time.Second, Release: true,
		Tokens: true, // the other runs leave tokens out, as the launcher does
	})
	var report strings.Builder
	if res != nil {
		PrintText(&report, res)
	}
	if err != nil {
		t.Fatalf("load run on PostgreSQL: %v\n%s", err, report.String())
	}
	t.Logf("load report (PostgreSQL):\n%s", report.String())
	if res.Attest.OK == 0 || res.TotalErrors != 0 || res.Audit == nil || !res.Audit.OK() || res.Audit.Found != int(res.Attest.OK) {
		t.Errorf("attested %d, errors %d, audit %+v", res.Attest.OK, res.TotalErrors, res.Audit)
	}
}

// TestMainRefuses runs the command line with configuration mistakes: each
// exits 2 with a message naming the flag, before any connection (the
// address is one nothing listens on).
func TestMainRefuses(t *testing.T) {
	conn := []string{"--addr", "127.0.0.1:1", "--ca", "x", "--cert", "c", "--key", "k"}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"NaN rate", []string{"--rate", "NaN"}, "--rate NaN"},
		{"infinite rate", []string{"--rate", "Inf"}, "--rate +Inf"},
		{"negative rate", []string{"--rate", "-5"}, "--rate -5"},
		{"NaN in a sweep", []string{"--sweep", "100,NaN"}, "--sweep: rate NaN"},
		{"infinity in a sweep", []string{"--sweep", "+Inf"}, "--sweep: rate +Inf"},
		{"negative in a sweep", []string{"--sweep", "100,-100"}, "--sweep: rate -100"},
		{"negative timeout", []string{"--timeout", "-1s"}, "--timeout -1s: want a per-RPC deadline above 0"},
		// A 0 or "" typed on the command line is not the default.
		{"zero hosts", []string{"--hosts", "0"}, "--hosts 0: want 1..1000000 simulated hosts; leave --hosts out for the default (1000)"},
		{"zero launch PCR", []string{"--launch-pcr", "0"}, "--launch-pcr 0: want 1..23"},
		{"launch PCR 24", []string{"--launch-pcr", "24"}, "--launch-pcr 24: want 1..23"},
		{"empty sweep", []string{"--sweep", ""}, "--sweep is empty: want attestation rates"},
		{"zero timeout", []string{"--timeout", "0"}, "--timeout 0s: want a per-RPC deadline above 0"},
		{"zero duration", []string{"--duration", "0s"}, "--duration 0s"},
		{"zero slo", []string{"--sweep", "100", "--slo", "0"}, "--slo 0s"},
		{"zero concurrency", []string{"--concurrency", "0"}, "--concurrency 0"},
		{"zero conns", []string{"--conns", "0"}, "--conns 0"},
		{"empty policy", []string{"--policy", ""}, "--policy is empty"},
		{"empty secret", []string{"--secret", ""}, "--secret is empty"},
		{"empty policy with --write-policy", []string{"--write-policy", "-", "--policy", ""}, "--policy is empty"},
		{"rate too small", []string{"--rate", "1e-12"}, "--rate 1e-12 schedules less than one attestation"},
		{"sweep rate too small", []string{"--sweep", "1e-12", "--duration", "10s"}, "--sweep: rate 1e-12 schedules less than one attestation"},
	} {
		var out, errb bytes.Buffer
		code := Main(context.Background(), append(slices.Clone(conn), c.args...), &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), c.want) || out.Len() != 0 {
			t.Errorf("%s: exit %d, stderr %q, stdout %q; want exit 2 and a message with %q", c.name, code, errb.String(), out.String(), c.want)
		}
	}
}

// TestMainErrorPrefix checks that an error is printed with the command's
// name once, whether a config mistake or a failure after it.
func TestMainErrorPrefix(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing-ca.crt")
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"config mistake", []string{"--hosts", "3"}, 2, "bulwark-load: --addr is required"},
		{"sweep mistake", []string{"--addr", "127.0.0.1:1", "--ca", "x", "--cert", "c", "--key", "k", "--sweep", "10", "--rate", "5"}, 2, "bulwark-load: --rate and --sweep go separately"},
		{"CA file missing", []string{"--addr", "127.0.0.1:1", "--ca", missing, "--cert", "c", "--key", "k"}, 1, "bulwark-load: connecting to attestd (--addr 127.0.0.1:1, --ca " + missing + "): "},
	} {
		var out, errb bytes.Buffer
		code := Main(context.Background(), c.args, &out, &errb)
		if code != c.code || !strings.HasPrefix(errb.String(), c.want) || strings.Count(errb.String(), "load: ") != 1 {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and %q, with the prefix once", c.name, code, errb.String(), c.code, c.want)
		}
	}
}

// failWriter fails every write.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// TestWriteResult checks that a result that cannot be encoded or written
// is an error, not an empty success.
func TestWriteResult(t *testing.T) {
	good := &Result{Addr: "a:1", Rate: 5, Verdicts: map[string]uint64{}}
	for _, c := range []struct {
		name   string
		w      io.Writer
		res    *Result
		asJSON bool
		want   string // "" = no error
	}{
		{"json", &bytes.Buffer{}, good, true, ""},
		{"text", &bytes.Buffer{}, good, false, ""},
		{"json, NaN", &bytes.Buffer{}, &Result{Rate: math.NaN()}, true, "printing the result as JSON"},
		{"json, write fails", failWriter{}, good, true, "disk full"},
		{"text, write fails", failWriter{}, good, false, "printing the result: disk full"},
	} {
		err := writeResult(c.w, c.res, c.asJSON)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: err %v, want %q", c.name, err, c.want)
		}
	}
	if err := WritePolicy(failWriter{}, "", "", nil); err == nil {
		t.Error("WritePolicy to a failing writer: no error")
	}
}

func TestMainHelp(t *testing.T) {
	for _, c := range []struct {
		args       []string
		code       int
		stdout     string // "" = nothing
		stderr     string // "" = nothing
		usageOnErr bool
	}{
		{[]string{"help"}, 0, "--write-policy", "", false},
		{[]string{"--help"}, 0, "--write-policy", "", false},
		{[]string{"-h"}, 0, "--write-policy", "", false},
		{[]string{"--bogus"}, 2, "", "flag provided but not defined: -bogus", true},
		{[]string{"help", "me"}, 2, "", `unexpected argument "help"`, false},
		{[]string{"--hosts", "3", "help"}, 2, "", `unexpected argument "help"`, false},
	} {
		var out, errb bytes.Buffer
		code := Main(context.Background(), c.args, &out, &errb)
		if code != c.code ||
			c.stdout == "" && out.Len() != 0 || c.stdout != "" && !strings.Contains(out.String(), c.stdout) ||
			c.stderr == "" && errb.Len() != 0 || c.stderr != "" && !strings.Contains(errb.String(), c.stderr) ||
			c.usageOnErr && !strings.Contains(errb.String(), "Usage:") {
			t.Errorf("%q: exit %d (want %d), stdout %q (want %q), stderr %q (want %q)", c.args, code, c.code, out.String(), c.stdout, errb.String(), c.stderr)
		}
	}
}

func TestMainUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"--ek", "dsa"}, &out, &errb); code != 2 {
		t.Errorf("--ek dsa: exit %d", code)
	}
	if code := Main(context.Background(), []string{"--hosts", "3"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--addr") {
		t.Errorf("no --addr: exit %d, %q", code, errb.String())
	}
	errb.Reset()
	bad := filepath.Join(t.TempDir(), "missing", "cpu.prof")
	if code := Main(context.Background(), []string{"--cpuprofile", bad, "--addr", "127.0.0.1:1", "--ca", "x", "--cert", "c", "--key", "k"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--cpuprofile") {
		t.Errorf("--cpuprofile in a missing directory: exit %d, %q", code, errb.String())
	}
	out.Reset()
	p := filepath.Join(t.TempDir(), "p.yaml")
	if code := Main(context.Background(), []string{"--write-policy", p, "--policy", "fleet-a", "--secret", "db"}, &out, &errb); code != 0 {
		t.Fatalf("--write-policy: exit %d %s", code, errb.String())
	}
	b, _ := os.ReadFile(p)
	pol, err := policy.Parse(p, b, policy.LoadOptions{})
	if err != nil || pol.Name != "fleet-a" || pol.Secrets[0] != "db" {
		t.Errorf("written policy: %v %+v", err, pol)
	}
}
