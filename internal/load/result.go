package load

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Phase summarises one phase of a run.
type Phase struct {
	// Count is the operations attempted (an enrollment; or one
	// Challenge → Attest [→ ReleaseSecrets] cycle), OK those that fully
	// succeeded (for attestations: an allow verdict, and with --release
	// every secret opened).
	Count uint64 `json:"count"`
	OK    uint64 `json:"ok"`
	// Errors counts failures by gRPC code name ("Unavailable", ...) or by
	// what went wrong ("deny", "release: ...").
	Errors    map[string]uint64 `json:"errors"`
	Seconds   float64           `json:"seconds"`
	PerSecond float64           `json:"per_second"` // OK / Seconds
	Latency   Latency           `json:"latency"`    // of successful operations
}

// Result is the outcome of a run; Main prints it as text or JSON.
type Result struct {
	Addr        string  `json:"addr"`
	Hosts       int     `json:"hosts"`
	EK          string  `json:"ek"`
	Concurrency int     `json:"concurrency"`
	Conns       int     `json:"conns"`
	Rate        float64 `json:"target_rate"`
	Duration    float64 `json:"duration_seconds"` // of each step of a sweep
	Release     bool    `json:"release"`
	Tokens      bool    `json:"tokens"`
	TwoCalls    bool    `json:"two_calls,omitempty"`
	Policy      string  `json:"policy"`

	// PrepareSeconds is the time to create the simulated TPMs and their EK
	// certificates (no network).
	PrepareSeconds float64 `json:"prepare_seconds"`
	Enroll         Phase   `json:"enroll"`
	Attest         Phase   `json:"attest"`
	// RPC latencies of successful calls in the measured phase.
	RPC map[string]Latency `json:"rpc_latency"`
	// Verdicts counts allow and deny answers.
	Verdicts map[string]uint64 `json:"verdicts"`
	Audit    *AuditCheck       `json:"audit,omitempty"`
	// Sweep has each step of a --sweep run; Attest, RPC and Verdicts then
	// add all the steps up.
	Sweep *Sweep `json:"sweep,omitempty"`

	// For scripts/bench.sh: verified attestations per second and their p99.
	AttestationsPerSecond float64 `json:"attestations_per_second"`
	P99Ms                 float64 `json:"p99_ms"`
	TotalErrors           uint64  `json:"errors"`
	OK                    bool    `json:"ok"`
}

// counter gathers one worker's outcomes; merged at the end.
type counter struct {
	count, ok uint64
	errs      map[string]uint64
	lat       histogram
}

func (c *counter) fail(what string) {
	if c.errs == nil {
		c.errs = map[string]uint64{}
	}
	c.errs[what]++
}

func codeOf(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Code().String()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return codes.DeadlineExceeded.String()
	}
	if errors.Is(err, context.Canceled) {
		return codes.Canceled.String()
	}
	return "client: " + err.Error()
}

// sumCounters adds the workers' counters up into p's counts and returns
// their merged latency histogram, for p.summarise.
func sumCounters(p *Phase, cs []*counter, elapsed time.Duration) *histogram {
	var h histogram
	p.Errors = map[string]uint64{}
	for _, c := range cs {
		p.Count += c.count
		p.OK += c.ok
		for k, v := range c.errs {
			p.Errors[k] += v
		}
		h.merge(&c.lat)
	}
	p.Seconds = elapsed.Seconds()
	return &h
}

// summarise sets p's rate and latency summary from its counts and the
// histogram of its successful operations.
func (p *Phase) summarise(h *histogram) {
	if p.Seconds > 0 {
		p.PerSecond = float64(p.OK) / p.Seconds
	}
	p.Latency = h.summary()
}
