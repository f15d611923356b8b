package attestd

import (
	"context"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/google/go-attestation/attest"
	"github.com/prometheus/client_golang/prometheus"
)

// judged is what policy judges: a launch event and the host's boot state
// as verified — by the request's evidence (Verified.judged), or, for a
// kept sandbox judged again, at its launch and by its host's last quote.
type judged struct {
	NodeID         string
	Event          *measure.LaunchEvent
	HostPCRs       map[int][]byte
	FirmwareEvents []attest.Event
	Time           time.Time
}

// policyEvidence is the policy input: j with the artifact signatures the
// launcher sent.
func (j *judged) policyEvidence(sigs []*bulwarkv1.ArtifactSignature) policy.Evidence {
	return policy.Evidence{NodeID: j.NodeID, Event: *j.Event, HostPCRs: j.HostPCRs, Firmware: firmwareState(j.FirmwareEvents, j.HostPCRs), Time: j.Time, Signatures: artifactSignatures(sigs)}
}

func artifactSignatures(sigs []*bulwarkv1.ArtifactSignature) []policy.ArtifactSignature {
	if len(sigs) == 0 {
		return nil
	}
	out := make([]policy.ArtifactSignature, 0, len(sigs))
	for _, s := range sigs {
		out = append(out, policy.ArtifactSignature{Artifact: s.GetArtifact(), Signature: s.GetSignature(), Payload: s.GetPayload()})
	}
	return out
}

// judge evaluates the verified evidence (and the artifact signatures the
// launcher sent) with the policy set in force: the policy the launch event
// names.
func (s *Server) judge(ctx context.Context, j *judged, sigs []*bulwarkv1.ArtifactSignature) policy.Verdict {
	return s.policies.Evaluate(ctx, j.policyEvidence(sigs))
}

// policyStates lists the policies in force and, when the last load failed,
// the directory with its error.
func policyStates(w *policy.Watcher) []*bulwarkv1.PolicyStatus {
	st := w.Status()
	set := w.Set()
	out := make([]*bulwarkv1.PolicyStatus, 0, len(st.Policies)+1)
	for _, name := range st.Policies {
		ps := &bulwarkv1.PolicyStatus{Name: name, Loaded: true}
		if p := set.Get(name); p != nil {
			ps.File, ps.Version = p.File, p.Digest
		}
		out = append(out, ps)
	}
	if st.LastError != "" {
		out = append(out, &bulwarkv1.PolicyStatus{File: st.Dir, Loaded: false, Error: st.LastError})
	}
	return out
}

// RegisterPolicyMetrics exports the watcher's background reload counts
// (bulwark_attestd_policy_loads_total{result}) and whether the last load
// failed (bulwark_attestd_policy_load_error).
func RegisterPolicyMetrics(m *Metrics, w *policy.Watcher) {
	m.Registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "bulwark", Subsystem: "attestd", Name: "policy_loads_total",
			Help: "Policy directory loads by the watcher that succeeded.", ConstLabels: prometheus.Labels{"result": "ok"}},
			func() float64 { return float64(w.Status().Reloads) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "bulwark", Subsystem: "attestd", Name: "policy_loads_total",
			Help: "Policy directory loads by the watcher that succeeded.", ConstLabels: prometheus.Labels{"result": "error"}},
			func() float64 { return float64(w.Status().Failures) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "bulwark", Subsystem: "attestd", Name: "policy_load_error",
			Help: "1 when the last policy load failed (the previous policies stay in force)."},
			func() float64 {
				if w.Status().LastError != "" {
					return 1
				}
				return 0
			}),
	)
}
