package load

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseRates(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []float64
		err  string
	}{
		{"1000", []float64{1000}, ""},
		{"1000, 1500,2000", []float64{1000, 1500, 2000}, ""},
		{"12.5", []float64{12.5}, ""},
		{"", nil, `"" is not a rate`},
		{"1000,,2000", nil, `"" is not a rate`},
		{"1000,fast", nil, `"fast" is not a rate`},
	} {
		got, err := ParseRates(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseRates(%q): err %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || len(got) != len(c.want) {
			t.Errorf("ParseRates(%q) = %v, %v; want %v", c.in, got, err, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("ParseRates(%q) = %v; want %v", c.in, got, c.want)
			}
		}
	}
}

func TestSweepConfigRejects(t *testing.T) {
	base := func(mod func(*Config)) Config {
		c := Config{Addr: "a:1", CAFile: "x", CertFile: "c", KeyFile: "k", Rates: []float64{1000, 2000}, Duration: 10 * time.Second}
		mod(&c)
		return c
	}
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"with --rate", base(func(c *Config) { c.Rate = 5 }), "--rate and --sweep"},
		{"with --count", base(func(c *Config) { c.Count = 5 }), "--count does not apply"},
		{"zero rate", base(func(c *Config) { c.Rates = []float64{1000, 0} }), "rate 0"},
		{"negative rate", base(func(c *Config) { c.Rates = []float64{-1} }), "rate -1"},
		{"NaN rate", base(func(c *Config) { c.Rates = []float64{math.NaN()} }), "rate NaN"},
		{"infinite rate", base(func(c *Config) { c.Rates = []float64{1000, math.Inf(1)} }), "rate +Inf"},
		{"rate too small", base(func(c *Config) { c.Rates = []float64{1000, 1e-12} }), "rate 1e-12 schedules less than one attestation in a step of --duration 10s"},
		{"too many", base(func(c *Config) { c.Rates = make([]float64, MaxSweepSteps+1) }), "at most 20"},
		{"over an hour", base(func(c *Config) { c.Duration = 30 * time.Minute }), "over 1h0m0s in all"},
		{"negative slo", base(func(c *Config) { c.SLO = -time.Millisecond }), "--slo"},
	} {
		err := c.cfg.setDefaults()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one with %q", c.name, err, c.want)
		}
	}
	ok := base(func(*Config) {})
	if err := ok.setDefaults(); err != nil || ok.SLO != DefaultSLO {
		t.Errorf("a good sweep config: %v, SLO %v", err, ok.SLO)
	}
}

func TestSweepStepJudge(t *testing.T) {
	phase := func(ok uint64, perSecond, p99 float64, errs map[string]uint64) Phase {
		return Phase{Count: ok, OK: ok, PerSecond: perSecond, Latency: Latency{P99: p99}, Errors: errs}
	}
	for _, c := range []struct {
		name string
		step SweepStep
		why  string // "" = within
	}{
		{"within", SweepStep{Rate: 1000, Attest: phase(10000, 999, 19.9, map[string]uint64{})}, ""},
		{"at the objective", SweepStep{Rate: 1000, Attest: phase(10000, 1000, 20, nil)}, ""},
		{"slow", SweepStep{Rate: 1000, Attest: phase(10000, 1000, 20.1, nil)}, "p99 20.1 ms over 20 ms"},
		{"errors", SweepStep{Rate: 1000, Attest: phase(10000, 1000, 5, map[string]uint64{"Unavailable": 2, "deny": 1})}, "3 errors"},
		{"nothing done", SweepStep{Rate: 1000, Attest: phase(0, 0, 0, nil)}, "no attestation completed"},
	} {
		c.step.judge(20 * time.Millisecond)
		if c.step.Why != c.why || c.step.WithinSLO != (c.why == "") {
			t.Errorf("%s: within %v, why %q; want %q", c.name, c.step.WithinSLO, c.step.Why, c.why)
		}
	}
}

// TestSweepAgainstAttestd sweeps a small fleet through the command line: a
// step per rate, the steps add up to the whole, the audit check covers every
// step, and the objective picks the right highest rate.
func TestSweepAgainstAttestd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts attestd and runs a load; skipped with -short")
	}
	a := startAttestd(t, "")
	run := func(slo string) *Result {
		t.Helper()
		var out, errb bytes.Buffer
		code := Main(context.Background(), []string{"--addr", a.addr, "--ca", a.ca, "--cert", a.cert, "--key", a.key,
			"--ek-ca", a.ekCADir, "--hosts", "8", "--concurrency", "4", "--sweep", "20,40", "--duration", "1s",
			"--slo", slo, "--json"}, &out, &errb)
		if code != 0 {
			t.Fatalf("bulwark-load --sweep exit %d: %s\n%s", code, errb.String(), out.String())
		}
		var res Result
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("--json output: %v\n%s", err, out.String())
		}
		return &res
	}

	res := run("10s")
	sw := res.Sweep
	if sw == nil || len(sw.Steps) != 2 || sw.Steps[0].Rate != 20 || sw.Steps[1].Rate != 40 {
		t.Fatalf("sweep: %+v", sw)
	}
	if sw.Warmup == nil || sw.Warmup.Rate != 20 || sw.Warmup.Attest.OK != 8 || sw.Warmup.WithinSLO {
		t.Errorf("warm-up: %+v", sw.Warmup)
	}
	sum := sw.Warmup.Attest.OK
	for _, st := range sw.Steps {
		sum += st.Attest.OK
		if !st.WithinSLO || st.Attest.OK == 0 || st.RPC["attest"].Count != st.Attest.OK {
			t.Errorf("step at %v/s: %+v", st.Rate, st)
		}
	}
	if sw.MaxRate != 40 || sw.SLOMs != 10000 {
		t.Errorf("max rate within %v ms: %v, want 40", sw.SLOMs, sw.MaxRate)
	}
	if res.Attest.OK != sum || res.Attest.Latency.Count != sum || res.RPC["challenge"].Count != sum || res.Verdicts["allow"] != sum {
		t.Errorf("totals do not add the steps up (%d): attest %+v, rpc %+v, verdicts %v", sum, res.Attest, res.RPC, res.Verdicts)
	}
	if res.Audit == nil || !res.Audit.OK() || res.Audit.Expected != int(sum) {
		t.Errorf("audit check over the sweep: %+v", res.Audit)
	}

	// No real cycle answers within a microsecond: no step is within.
	res = run("1us")
	if res.Sweep.MaxRate != 0 || !strings.HasPrefix(res.Sweep.Steps[0].Why, "p99 ") {
		t.Errorf("a 1µs objective: %+v", res.Sweep)
	}
	var b strings.Builder
	PrintText(&b, res)
	if !strings.Contains(b.String(), "no rate was within the objective") || !strings.Contains(b.String(), "OUT: p99") {
		t.Errorf("text report:\n%s", b.String())
	}
}
