package attestd

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are attestd's Prometheus metrics, on their own registry.
type Metrics struct {
	Registry      *prometheus.Registry
	Attestations  *prometheus.CounterVec   // by verdict: allow, deny, error
	RPCDuration   *prometheus.HistogramVec // by method and code
	Releases      *prometheus.CounterVec   // by result: ok, refused
	SecretsOut    prometheus.Counter       // secrets wrapped and released
	PolicyReloads *prometheus.CounterVec   // by result: ok, error
	Panics        prometheus.Counter
	// RateLimited counts calls refused by the per-peer rate limit, by
	// method; UnauditedRefusals every refusal not written to the audit log
	// (the caller proved nothing first), by method.
	RateLimited       *prometheus.CounterVec
	UnauditedRefusals *prometheus.CounterVec
	// ConnsRefused counts connections closed at accept by the connection
	// limits, by reason (max_conns, max_conns_per_peer); ConnsOpen is the
	// gRPC connections open now.
	ConnsRefused *prometheus.CounterVec
	ConnsOpen    prometheus.Gauge
	// The embedded store's group commits (ObserveCommit).
	StoreCommit       prometheus.Histogram // seconds per commit
	StoreCommitWrites prometheus.Histogram // writes per commit
	// Continuous attestation: decisions pushed to hosts, by kind (revoke,
	// rotate), and re-attestations (one quote for a host's sandboxes).
	Decisions      *prometheus.CounterVec
	Reattestations prometheus.Counter
}

// NewMetrics registers attestd's metrics (and the Go and process
// collectors) on a fresh registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bulwark", Subsystem: "attestd", Name: "attestations_total",
			Help: "Attestations judged, by verdict (allow, deny) or refused before a verdict (error).",
		}, []string{"verdict"}),
		RPCDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "bulwark", Subsystem: "attestd", Name: "rpc_duration_seconds",
			Help:    "gRPC handling latency by method and status code.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method", "code"}),
		Releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bulwark", Subsystem: "attestd", Name: "releases_total",
			Help: "ReleaseSecrets calls by result (ok, refused).",
		}, []string{"result"}),
		SecretsOut: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "bulwark", Subsystem: "attestd", Name: "secrets_released_total",
			Help: "Secrets wrapped to an attested guest key and released.",
		}),
		PolicyReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bulwark", Subsystem: "attestd", Name: "policy_reloads_total",
			Help: "Policy directory reloads by result (ok, error).",
		}, []string{"result"}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "bulwark", Subsystem: "attestd", Name: "handler_panics_total",
			Help: "Panics recovered in gRPC handlers (each one is a bug).",
		}),
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bulwark", Subsystem: "attestd", Name: "rate_limited_total",
			Help: "Calls refused (ResourceExhausted) by the per-peer rate limit on Challenge, Enroll, ActivateCredential and Preflight, by method.",
		}, []string{"method"}),
		UnauditedRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bulwark", Subsystem: "attestd", Name: "unaudited_refusals_total",
			Help: "Refused calls not written to the audit log because the caller had proven nothing a stranger cannot (no verified quote, admin certificate or credential activation), by method; their log lines are sampled.",
		}, []string{"method"}),
		ConnsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bulwark", Subsystem: "attestd", Name: "connections_refused_total",
			Help: "gRPC connections closed as soon as accepted, by reason: max_conns (attestd serve --max-conns open already) or max_conns_per_peer (--max-conns-per-peer open from that address; IPv6: that /64).",
		}, []string{"reason"}),
		ConnsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "bulwark", Subsystem: "attestd", Name: "connections_open",
			Help: "gRPC connections open now (counted by the connection limits).",
		}),
		StoreCommit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "bulwark", Subsystem: "store", Name: "commit_seconds",
			Help:    "Embedded store: duration of each group commit, its fdatasyncs included.",
			Buckets: []float64{.00025, .0005, .001, .002, .004, .008, .016, .032, .064, .128, .5},
		}),
		StoreCommitWrites: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "bulwark", Subsystem: "store", Name: "commit_writes",
			Help:    "Embedded store: writes (verdicts, enrollments, ...) carried by each group commit.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
		}),
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bulwark", Subsystem: "attestd", Name: "decisions_total",
			Help: "Decisions about running sandboxes for their hosts, by kind: revoke, rotate.",
		}, []string{"kind"}),
		Reattestations: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "bulwark", Subsystem: "attestd", Name: "reattestations_total",
			Help: "Re-attestations of a host's running sandboxes (one quote each).",
		}),
	}
	m.Registry.MustRegister(m.Attestations, m.RPCDuration, m.Releases, m.SecretsOut, m.PolicyReloads, m.Panics,
		m.RateLimited, m.UnauditedRefusals, m.ConnsRefused, m.ConnsOpen,
		m.StoreCommit, m.StoreCommitWrites, m.Decisions, m.Reattestations,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{refusedMaxConns, refusedPerPeer} {
		m.ConnsRefused.WithLabelValues(r) // exported as 0 from the start
	}
	for _, k := range []string{"revoke", "rotate"} {
		m.Decisions.WithLabelValues(k)
	}
	return m
}

// ObserveCommit records one group commit of the embedded store; it is
// the store's Options.OnCommit.
func (m *Metrics) ObserveCommit(writes int, took time.Duration) {
	m.StoreCommit.Observe(took.Seconds())
	m.StoreCommitWrites.Observe(float64(writes))
}

// Handler serves /metrics from the registry.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
