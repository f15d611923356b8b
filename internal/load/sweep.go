package load

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// A sweep drives the same enrolled fleet at several rates in turn, one
// measured phase of Config.Duration each, and reports the highest rate
// whose cycle latency stayed within a p99 objective: the figure to plan
// capacity with ("how many attestations a second can this attestd take and
// still answer 99 % of them within 20 ms?").

// DefaultSLO is the p99 objective a sweep step is held to.
const DefaultSLO = 20 * time.Millisecond

// MaxSweepSteps bounds --sweep.
const MaxSweepSteps = 20

// A sweep starts with a warm-up at its first rate, not judged: one round of
// the fleet, so that every host has attested once. A host's first
// attestation after enrollment costs more than its next ones (attestd
// inserts its first last-verdict entry instead of updating one in place;
// the simulated TPM's signing key is prepared on first use; both processes'
// heaps grow) and would otherwise count against the first step. The round
// is cut short after maxWarmup.
const maxWarmup = time.Minute

// Sweep is the outcome of a rate sweep.
type Sweep struct {
	SLOMs  float64     `json:"slo_p99_ms"`
	Warmup *SweepStep  `json:"warmup"` // one round of the fleet; not judged, in the run's totals
	Steps  []SweepStep `json:"steps"`
	// MaxRate is the highest target rate of a step within the objective:
	// no error and a cycle p99 of at most SLOMs. 0 when no step was. (A
	// step's latencies count from each attestation's slot in the schedule,
	// so an attestd that falls behind the rate shows it in the p99.)
	MaxRate float64 `json:"max_rate_within_slo"`
}

// SweepStep is one rate of a sweep.
type SweepStep struct {
	Rate      float64            `json:"target_rate"`
	Attest    Phase              `json:"attest"`
	RPC       map[string]Latency `json:"rpc_latency"`
	WithinSLO bool               `json:"within_slo"`
	// Why says why a step is not within the objective ("" when it is).
	Why string `json:"why,omitempty"`
}

// judge sets WithinSLO and Why.
func (s *SweepStep) judge(slo time.Duration) {
	sloMs := float64(slo) / float64(time.Millisecond)
	var errs uint64
	for _, n := range s.Attest.Errors {
		errs += n
	}
	switch {
	case errs > 0:
		s.Why = fmt.Sprintf("%d errors", errs)
	case s.Attest.OK == 0:
		s.Why = "no attestation completed"
	case s.Attest.Latency.P99 > sloMs:
		s.Why = fmt.Sprintf("p99 %.1f ms over %.0f ms", s.Attest.Latency.P99, sloMs)
	}
	s.WithinSLO = s.Why == ""
}

// ParseRates parses --sweep: attestation rates per second, comma-separated
// ("1000,1500,2000"). Config.Rates is checked with the rest of the Config.
func ParseRates(s string) ([]float64, error) {
	var rates []float64
	for f := range strings.SplitSeq(s, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return nil, fmt.Errorf("--sweep: %q is not a rate (want attestations per second, comma-separated, e.g. 1000,1500,2000)", f)
		}
		rates = append(rates, r)
	}
	return rates, nil
}

// sweep warms up, drives f at each of cfg.Rates for cfg.Duration and fills
// res: the steps, and res.Attest, res.RPC and res.Verdicts over the warm-up
// and all the steps (every verdict the audit check looks for).
func sweep(ctx context.Context, cfg Config, f *Fleet, res *Result) {
	sw := &Sweep{SLOMs: float64(cfg.SLO) / float64(time.Millisecond)}
	total := &DriveResult{RPC: map[string]Latency{}, Verdicts: map[string]uint64{}}
	d := f.Drive(ctx, Drive{Rate: cfg.Rates[0], Count: len(f.hosts), Duration: maxWarmup, Tokens: cfg.Tokens, TwoCalls: cfg.TwoCalls})
	sw.Warmup = &SweepStep{Rate: cfg.Rates[0], Attest: d.Attest, RPC: d.RPC}
	total.add(d)
	for _, rate := range cfg.Rates {
		if ctx.Err() != nil {
			break
		}
		d := f.Drive(ctx, Drive{Rate: rate, Duration: cfg.Duration, Tokens: cfg.Tokens, TwoCalls: cfg.TwoCalls})
		step := SweepStep{Rate: rate, Attest: d.Attest, RPC: d.RPC}
		step.judge(cfg.SLO)
		if step.WithinSLO {
			sw.MaxRate = max(sw.MaxRate, rate)
		}
		cfg.Logger.Info("sweep step done", "rate", rate, "per_second", step.Attest.PerSecond,
			"p99_ms", step.Attest.Latency.P99, "within_slo", step.WithinSLO, "why", step.Why)
		sw.Steps = append(sw.Steps, step)
		total.add(d)
	}
	total.finish()
	res.Sweep = sw
	res.Attest, res.RPC, res.Verdicts = total.Attest, total.RPC, total.Verdicts
}

// checkSweep validates the sweep settings of c (and defaults SLO).
func (c *Config) checkSweep() error {
	if c.SLO == 0 {
		c.SLO = DefaultSLO
	}
	if c.SLO < 0 {
		return fmt.Errorf("--slo %v: want more than 0", c.SLO)
	}
	if len(c.Rates) == 0 {
		return nil
	}
	if c.Rate != 0 {
		return errors.New("--rate and --sweep go separately: a sweep sets the rate of each step")
	}
	if c.Count != 0 {
		return errors.New("--count does not apply to --sweep: each step runs for --duration")
	}
	if len(c.Rates) > MaxSweepSteps {
		return fmt.Errorf("--sweep: %d rates; at most %d", len(c.Rates), MaxSweepSteps)
	}
	for _, r := range c.Rates {
		if !(r > 0) || math.IsInf(r, 0) {
			return fmt.Errorf("--sweep: rate %v: want attestations per second above 0", r)
		}
		if r*c.Duration.Seconds() < 1 {
			return fmt.Errorf("--sweep: rate %v schedules less than one attestation in a step of --duration %v: want at least %.3g a second (one per step), or a longer --duration", r, c.Duration, 1/c.Duration.Seconds())
		}
	}
	if time.Duration(len(c.Rates))*c.Duration+maxWarmup > MaxDuration {
		return fmt.Errorf("--sweep of %d steps of --duration %v is over %v in all: shorten the steps or take fewer", len(c.Rates), c.Duration, MaxDuration)
	}
	return nil
}
