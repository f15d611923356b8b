package attestd

import (
	"context"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/prometheus/client_golang/prometheus"
)

// PolicyEngine adapts a policy.Watcher (the reloading policy directory)
// to Policies.
type PolicyEngine struct {
	W *policy.Watcher
}

var _ Policies = (*PolicyEngine)(nil)

// Evidence builds the policy input from a verified attestation.
func Evidence(v *Verified, sigs []*bulwarkv1.ArtifactSignature) policy.Evidence {
	return policy.Evidence{NodeID: v.Node.ID, Event: *v.Event, HostPCRs: v.HostPCRs, Firmware: firmwareState(v.FirmwareEvents, v.HostPCRs), Time: v.Time, Signatures: artifactSignatures(sigs)}
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

// Judge evaluates the verified evidence with the policy set in force.
func (e *PolicyEngine) Judge(ctx context.Context, v *Verified, sigs []*bulwarkv1.ArtifactSignature) Judgement {
	vd := e.W.Evaluate(ctx, Evidence(v, sigs))
	return Judgement{Allow: vd.Allow, Policy: vd.Policy, Reasons: vd.Reasons, Secrets: vd.Secrets, OnRevoke: vd.OnRevoke}
}

// Preflight judges a launch before boot with the policy set in force.
func (e *PolicyEngine) Preflight(ctx context.Context, ev policy.Evidence) Judgement {
	vd := e.W.Preflight(ctx, ev)
	return Judgement{Allow: vd.Allow, Policy: vd.Policy, Reasons: vd.Reasons, Releases: vd.Releases}
}

// Status reports the policies in force and the last load error, if any.
func (e *PolicyEngine) Status() PolicyReport {
	st := e.W.Status()
	set := e.W.Set()
	r := PolicyReport{LoadedAt: st.LoadedAt, OK: st.LastError == ""}
	for _, name := range st.Policies {
		ps := PolicyState{Name: name, Loaded: true}
		if p := set.Get(name); p != nil {
			ps.File, ps.Version = p.File, p.Digest
		}
		r.Policies = append(r.Policies, ps)
	}
	if st.LastError != "" {
		r.Policies = append(r.Policies, PolicyState{File: st.Dir, Loaded: false, Error: st.LastError})
	}
	return r
}

// Reload re-reads the directory now.
func (e *PolicyEngine) Reload(ctx context.Context) (PolicyReport, error) {
	err := e.W.Reload()
	return e.Status(), err
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
