package attestd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"
)

// Continuous attestation (docs/attestd.md "Continuous attestation"): a
// sandbox launched with reattest_interval_seconds is kept — its verdict,
// the verdict's time and the evidence of its launch. The host service
// re-attests all its sandboxes with one quote every interval (reattest);
// an allow older than twice the interval is stale and never reported as
// attested. A change that makes a kept sandbox fail — its node revoked, a
// secret deleted, a policy that no longer allows it (judged again from
// the stored evidence, without the host) — is a revocation, and a new
// version of a secret it holds a rotation: both are decisions, stored per
// node in order and pushed to the node's host service (WatchNode).

// Limits of continuous attestation.
const (
	// MaxReattestSandboxes bounds AttestRequest.sandbox_ids.
	MaxReattestSandboxes = 1024
	// MaxReattestInterval bounds AttestRequest.reattest_interval_seconds.
	MaxReattestInterval = 86400
)

// keptEvidence is what is kept of a sandbox's attestation to judge it again
// without the host: the launch event, the artifact signatures, and the
// host's boot state as last quoted.
type keptEvidence struct {
	Event      measure.LaunchEvent        `json:"event"`
	Signatures []policy.ArtifactSignature `json:"signatures,omitempty"`
	HostPCRs   map[int][]byte             `json:"host_pcrs,omitempty"`
	Firmware   []byte                     `json:"firmware,omitempty"`
}

// judged rebuilds what policy judges, at now.
func (e *keptEvidence) judged(node store.Node, now time.Time) (*judged, []*bulwarkv1.ArtifactSignature, error) {
	v := &judged{NodeID: node.ID, Event: &e.Event, HostPCRs: e.HostPCRs, Time: now}
	if len(e.Firmware) > 0 {
		evs, err := replayFirmwareLog(e.Firmware, e.HostPCRs)
		if err != nil {
			return nil, nil, err
		}
		v.FirmwareEvents = evs
	}
	sigs := make([]*bulwarkv1.ArtifactSignature, 0, len(e.Signatures))
	for _, s := range e.Signatures {
		sigs = append(sigs, &bulwarkv1.ArtifactSignature{Artifact: s.Artifact, Signature: s.Signature, Payload: s.Payload})
	}
	return v, sigs, nil
}

func decodeEvidence(b []byte) (*keptEvidence, error) {
	var e keptEvidence
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("kept evidence: %w", err)
	}
	return &e, nil
}

// hub tells the WatchNode streams of a node that it has new decisions.
type hub struct {
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
}

func (h *hub) subscribe(node string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[string]map[chan struct{}]struct{}{}
	}
	if h.subs[node] == nil {
		h.subs[node] = map[chan struct{}]struct{}{}
	}
	h.subs[node][ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs[node], ch)
		if len(h.subs[node]) == 0 {
			delete(h.subs, node)
		}
		h.mu.Unlock()
	}
}

func (h *hub) notify(node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs[node] {
		select {
		case ch <- struct{}{}:
		default: // already told
		}
	}
}

// keepSandbox starts keeping a sandbox after its launch's attestation
// (with reattest_interval_seconds set).
func (s *Server) keepSandbox(ctx context.Context, v *Verified, req *bulwarkv1.AttestRequest, j policy.Verdict) error {
	event, clock := v.ev.Event(), v.ev.Clock()
	ev := keptEvidence{Event: *event, Signatures: artifactSignatures(req.GetSignatures()), HostPCRs: v.ev.HostPCRs(), Firmware: req.GetFirmwareEventLog()}
	b, err := json.Marshal(&ev)
	if err != nil {
		return fmt.Errorf("keeping sandbox %s: %w", event.SandboxID, err)
	}
	st := store.SandboxState{
		NodeID: v.node.ID, SandboxID: event.SandboxID, Policy: event.Policy, JudgedBy: j.Policy, Verdict: store.SandboxDeny,
		Reasons: j.Reasons, VerdictAt: v.at, Interval: time.Duration(req.GetReattestIntervalSeconds()) * time.Second,
		GuestPublicKey: event.GuestPublicKey, EventDigest: v.ev.EventDigest(), ResetCount: clock.ResetCount, RestartCount: clock.RestartCount,
		Evidence: b, OnRevoke: j.OnRevoke, CreatedAt: v.at,
	}
	if j.Allow {
		st.Verdict = store.SandboxAllow
		if len(j.Secrets) > 0 {
			metas, err := s.vault.List(ctx)
			if err != nil {
				return fmt.Errorf("keeping sandbox %s: %w", st.SandboxID, err)
			}
			for _, name := range j.Secrets {
				for _, m := range metas {
					if m.Name == name {
						st.Secrets = append(st.Secrets, store.SandboxSecret{Name: name, Version: m.Version})
					}
				}
			}
		}
	}
	return s.st.PutSandbox(ctx, st)
}

// reattest is Attest for sandbox_ids: one quote, every named sandbox
// judged again (and those in ended_sandbox_ids forgotten). Each must be kept (attested at launch with an interval),
// and its launch record must be in the node's verified launch log, in the
// TPM boot cycle it was launched in, with the digest attested then; a
// kept sandbox revoked stays revoked. Each verdict is kept with its time;
// an allow that turns into a deny is a revocation.
func (s *Server) reattest(ctx context.Context, v *Verified, req *bulwarkv1.AttestRequest) (*bulwarkv1.AttestResponse, error) {
	now := v.at
	out := &bulwarkv1.AttestResponse{Verdict: bulwarkv1.Verdict_VERDICT_ALLOW}
	for _, id := range req.GetSandboxIds() {
		sv, err := s.reattestOne(ctx, v, req, id, now)
		if err != nil {
			return nil, err
		}
		if sv.Verdict != bulwarkv1.Verdict_VERDICT_ALLOW {
			out.Verdict = bulwarkv1.Verdict_VERDICT_DENY
		}
		out.Sandboxes = append(out.Sandboxes, sv)
	}
	// Sandboxes the host says ended are not stale: they no longer run.
	// One whose END record is in the verified log is kept as ended;
	// without one (a host that writes none), it is forgotten.
	for _, id := range req.GetEndedSandboxIds() {
		st, err := s.st.GetSandbox(ctx, v.node.ID, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, s.storeStatus(ctx, "attest: sandbox "+id, err)
		}
		if st.Verdict == store.SandboxEnded {
			continue
		}
		end, err := s.endRecord(ctx, v, id, st)
		if err != nil {
			return nil, err
		}
		if end != "" {
			if err := s.markEnded(ctx, st, end, now); err != nil {
				return nil, err
			}
			continue
		}
		err = s.st.DeleteSandbox(ctx, v.node.ID, id)
		switch {
		case err == nil:
			s.log.InfoContext(ctx, "kept sandbox ended", "node", v.node.ID, "sandbox", id)
		case !errors.Is(err, store.ErrNotFound):
			return nil, s.storeStatus(ctx, "attest: sandbox "+id, err)
		}
	}
	s.metrics.Reattestations.Inc()
	return out, nil
}

func (s *Server) reattestOne(ctx context.Context, v *Verified, req *bulwarkv1.AttestRequest, id string, now time.Time) (*bulwarkv1.SandboxVerdict, error) {
	deny := func(reasons ...string) *bulwarkv1.SandboxVerdict {
		return &bulwarkv1.SandboxVerdict{SandboxId: id, Verdict: bulwarkv1.Verdict_VERDICT_DENY, Reasons: reasons}
	}
	st, err := s.st.GetSandbox(ctx, v.node.ID, id)
	if errors.Is(err, store.ErrNotFound) {
		return deny(fmt.Sprintf("sandbox %s is not kept by attestd: only a launch attested with reattest_interval_seconds (by the host service) is re-attested", id)), nil
	}
	if err != nil {
		return nil, s.storeStatus(ctx, "attest: sandbox "+id, err)
	}
	if st.Verdict == store.SandboxRevoked {
		return &bulwarkv1.SandboxVerdict{SandboxId: id, Verdict: bulwarkv1.Verdict_VERDICT_DENY, Policy: st.JudgedBy,
			Reasons: append([]string{"revoked"}, st.Reasons...)}, nil
	}
	if st.Verdict == store.SandboxEnded {
		return &bulwarkv1.SandboxVerdict{SandboxId: id, Verdict: bulwarkv1.Verdict_VERDICT_DENY, Policy: st.JudgedBy, Reasons: st.Reasons}, nil
	}
	var reasons []string
	clock := v.ev.Clock()
	hv, err := s.st.ReadLaunchPrefix(ctx, v.node.ID, 0, id)
	launches, end := splitEnd(hv.Sandbox)
	switch {
	case errors.Is(err, store.ErrNotFound):
		reasons = append(reasons, "attestd holds no verified launch log for this node")
	case err != nil:
		return nil, s.storeStatus(ctx, "attest: launch log prefix", err)
	case !hv.Prefix.SameBoot(clock.ResetCount, clock.RestartCount) || st.ResetCount != clock.ResetCount || st.RestartCount != clock.RestartCount:
		reasons = append(reasons, "the host's TPM was reset or restarted (a reboot) since the sandbox was launched: it no longer runs")
	case len(launches) != 1 || !bytes.Equal(launches[0].Digest, st.EventDigest):
		reasons = append(reasons, fmt.Sprintf("the verified launch log has %d launch records for sandbox %s, not the one attested at launch", len(launches), id))
	case end != nil:
		// Ended: never judged alive again, neither attested nor stale.
		if err := s.markEnded(ctx, st, endReason(end), now); err != nil {
			return nil, err
		}
		return deny(endReason(end)), nil
	}
	if len(reasons) == 0 {
		ev, err := decodeEvidence(st.Evidence)
		if err != nil {
			return nil, s.storeStatus(ctx, "attest: sandbox "+id, err)
		}
		// The host's boot state as quoted now; the launch as attested then.
		ev.HostPCRs, ev.Firmware = v.ev.HostPCRs(), req.GetFirmwareEventLog()
		jv := &judged{NodeID: v.node.ID, Event: &ev.Event, HostPCRs: ev.HostPCRs, FirmwareEvents: v.ev.FirmwareEvents(), Time: now}
		sigs := make([]*bulwarkv1.ArtifactSignature, 0, len(ev.Signatures))
		for _, sg := range ev.Signatures {
			sigs = append(sigs, &bulwarkv1.ArtifactSignature{Artifact: sg.Artifact, Signature: sg.Signature, Payload: sg.Payload})
		}
		j := s.judge(ctx, jv, sigs)
		if !j.Allow && len(j.Reasons) == 0 {
			j.Reasons = []string{"denied by policy"}
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return nil, s.storeStatus(ctx, "attest: sandbox "+id, err)
		}
		st.Evidence, st.JudgedBy, st.OnRevoke = b, j.Policy, j.OnRevoke
		if j.Allow {
			st.Verdict, st.Reasons, st.VerdictAt = store.SandboxAllow, j.Reasons, now
			if i := req.GetReattestIntervalSeconds(); i > 0 {
				st.Interval = time.Duration(i) * time.Second
			}
			if err := s.st.PutSandbox(ctx, st); err != nil {
				return nil, s.storeStatus(ctx, "attest: sandbox "+id, err)
			}
			return &bulwarkv1.SandboxVerdict{SandboxId: id, Verdict: bulwarkv1.Verdict_VERDICT_ALLOW, Reasons: j.Reasons, Policy: j.Policy}, nil
		}
		reasons = j.Reasons
	}
	// A deny: a sandbox that passed before is revoked (its secrets leave
	// the guest); one denied before stays denied, with its new time.
	if st.Verdict == store.SandboxAllow {
		if _, err := s.revoke(ctx, st, nil, reasons...); err != nil {
			return nil, err
		}
	} else {
		st.Reasons, st.VerdictAt = reasons, now
		if err := s.st.PutSandbox(ctx, st); err != nil {
			return nil, s.storeStatus(ctx, "attest: sandbox "+id, err)
		}
	}
	out := deny(reasons...)
	out.Policy = st.JudgedBy
	return out, nil
}

// splitEnd splits a sandbox's verified records into its launch records
// and its END record (nil if it has not ended).
func splitEnd(recs []store.PrefixRecord) (launches []store.PrefixRecord, end *store.PrefixRecord) {
	for i := range recs {
		if recs[i].End {
			end = &recs[i]
		} else {
			launches = append(launches, recs[i])
		}
	}
	return launches, end
}

// endReason is the reason reported for a sandbox that ended.
func endReason(end *store.PrefixRecord) string {
	return fmt.Sprintf("ended: the sandbox's END record (record %d) is in the node's verified launch log; it no longer runs", end.RecNum)
}

// endRecord returns the reason to report when kept sandbox st's END
// record is in the node's verified log, in the boot cycle it was launched
// in and after the launch attested, and "" when it is not.
func (s *Server) endRecord(ctx context.Context, v *Verified, id string, st store.SandboxState) (string, error) {
	hv, err := s.st.ReadLaunchPrefix(ctx, v.node.ID, 0, id)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", s.storeStatus(ctx, "attest: launch log prefix", err)
	}
	launches, end := splitEnd(hv.Sandbox)
	if end == nil || !hv.Prefix.SameBoot(st.ResetCount, st.RestartCount) || len(launches) != 1 || !bytes.Equal(launches[0].Digest, st.EventDigest) {
		return "", nil
	}
	return endReason(end), nil
}

// markEnded keeps st as ended: never judged again, neither attested nor
// stale. Its evidence and secrets are dropped (nothing judges or rotates
// them any more); the state stays, small, for 'attestd ctl sandboxes'.
func (s *Server) markEnded(ctx context.Context, st store.SandboxState, reason string, now time.Time) error {
	st.Verdict, st.Reasons, st.VerdictAt = store.SandboxEnded, []string{reason}, now
	st.Evidence, st.Secrets = nil, nil
	if err := s.st.PutSandbox(ctx, st); err != nil && !errors.Is(err, store.ErrNotFound) {
		return s.storeStatus(ctx, "attest: sandbox "+st.SandboxID, err)
	}
	s.log.InfoContext(ctx, "kept sandbox ended", "node", st.NodeID, "sandbox", st.SandboxID, "reason", reason)
	return nil
}

// revoke ends a kept sandbox's attestation: a decision for its host
// (remove the secrets named, none meaning all, then the policy's
// on_revoke), the state revoked, an audit record, and the node's streams
// told. With names, only those secrets are revoked and the sandbox stays
// kept as it was, without them.
//
// A launch's revocation is one decision, whichever path decides it and
// however many decide it at once (the admin's policy reload and the
// policy watcher both judge the kept sandboxes again; so does every
// replica): the decision is keyed by the launch event (store.RevokeKey),
// and a path that finds it stored already only brings the sandbox's
// state in line with it.
// It reports whether this call made the decision.
func (s *Server) revoke(ctx context.Context, st store.SandboxState, names []string, reasons ...string) (bool, error) {
	action := st.OnRevoke
	if action == "" {
		action = policy.OnRevokeStop
	}
	d := store.Decision{NodeID: st.NodeID, SandboxID: st.SandboxID, Kind: store.DecisionRevoke, Action: action, Reasons: reasons,
		Key: store.RevokeKey(st.SandboxID, st.EventDigest, names...), CreatedAt: s.now()}
	for _, n := range names {
		d.Secrets = append(d.Secrets, store.DecisionSecret{Name: n})
	}
	d, err := s.st.AppendDecision(ctx, d)
	dup := errors.Is(err, store.ErrConflict)
	if err != nil && !dup {
		return false, s.storeStatus(ctx, "revocation of sandbox "+st.SandboxID, err)
	}
	if dup {
		// Decided (and sent) already. The state as that decision leaves
		// it, if its maker has not written it (yet, or ever: a crash).
		action, reasons = d.Action, d.Reasons
		cur, err := s.st.GetSandbox(ctx, st.NodeID, st.SandboxID)
		if errors.Is(err, store.ErrNotFound) || (err == nil && cur.Verdict != store.SandboxAllow) {
			s.log.DebugContext(ctx, "sandbox revoked already", "node", st.NodeID, "sandbox", st.SandboxID, "seq", d.Seq)
			return false, nil
		}
		if err != nil {
			return false, s.storeStatus(ctx, "revocation of sandbox "+st.SandboxID, err)
		}
		st = cur
	} else {
		// The decision is durable: the host may have it now, before the
		// state and audit writes below.
		s.watchers.notify(st.NodeID)
	}
	if len(names) == 0 {
		st.Verdict, st.Reasons, st.VerdictAt, st.Secrets = store.SandboxRevoked, reasons, d.CreatedAt, nil
	} else {
		st.Secrets = slices.DeleteFunc(st.Secrets, func(x store.SandboxSecret) bool { return slices.Contains(names, x.Name) })
		if action == policy.OnRevokeStop {
			st.Verdict, st.Reasons, st.VerdictAt = store.SandboxRevoked, reasons, d.CreatedAt
		}
	}
	if err := s.st.PutSandbox(ctx, st); err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, s.storeStatus(ctx, "revocation of sandbox "+st.SandboxID, err)
	}
	if dup {
		s.log.DebugContext(ctx, "sandbox revoked already", "node", st.NodeID, "sandbox", st.SandboxID, "seq", d.Seq)
		return false, nil
	}
	details, _ := json.Marshal(map[string]any{"event": "sandbox.revoke", "sandbox": st.SandboxID, "seq": d.Seq, "action": action, "secrets": names, "reasons": reasons})
	if err := s.appendAudit(ctx, store.AuditEntry{Kind: store.KindVerdict, NodeID: st.NodeID, Subject: st.SandboxID, Details: details}); err != nil {
		s.log.ErrorContext(ctx, "audit of a revocation failed", "node", st.NodeID, "sandbox", st.SandboxID, "error", err)
	}
	s.metrics.Decisions.WithLabelValues(string(store.DecisionRevoke)).Inc()
	s.log.WarnContext(ctx, "sandbox revoked", "node", st.NodeID, "sandbox", st.SandboxID, "seq", d.Seq, "action", action, "secrets", names, "reasons", reasons)
	return true, nil
}

// keptSandboxes lists the kept sandboxes of node ("": all) for which f
// is true.
func (s *Server) keptSandboxes(ctx context.Context, node string, f func(*store.SandboxState) bool) ([]store.SandboxState, error) {
	all, err := s.st.ListSandboxStates(ctx, node)
	if err != nil {
		return nil, s.storeStatus(ctx, "sandboxes", err)
	}
	return slices.DeleteFunc(all, func(st store.SandboxState) bool { return !f(&st) }), nil
}

// revokeNode revokes every kept sandbox of a node that was not revoked.
func (s *Server) revokeNode(ctx context.Context, node string) (int, error) {
	sts, err := s.keptSandboxes(ctx, node, func(st *store.SandboxState) bool { return st.Verdict == store.SandboxAllow })
	if err != nil {
		return 0, err
	}
	n := 0
	for _, st := range sts {
		made, err := s.revoke(ctx, st, nil, "the node was revoked by an administrator")
		if err != nil {
			return n, err
		}
		if made {
			n++
		}
	}
	return n, nil
}

// Rejudge judges every kept sandbox that passes again, by the policies in
// force, from its stored evidence (no host involved): one that no longer
// passes is revoked. ReloadPolicies calls it; so does the policy
// watcher's reload (attestd serve), at the same time for an admin's
// reload: each revocation is one decision however many run (revoke). It
// returns how many this call revoked.
func (s *Server) Rejudge(ctx context.Context) (int, error) {
	sts, err := s.keptSandboxes(ctx, "", func(st *store.SandboxState) bool { return st.Verdict == store.SandboxAllow })
	if err != nil {
		return 0, err
	}
	n := 0
	for _, st := range sts {
		node, err := s.st.GetNode(ctx, st.NodeID)
		if err != nil {
			continue // deleted meanwhile
		}
		j, err := s.judgeKept(ctx, node, &st)
		if err != nil {
			return n, err
		}
		if j.Allow {
			continue
		}
		reasons := append([]string{"judged again after a policy change: the policy in force no longer allows it"}, j.Reasons...)
		made, err := s.revoke(ctx, st, nil, reasons...)
		if err != nil {
			return n, err
		}
		if made {
			n++
		}
	}
	return n, nil
}

// judgeKept judges a kept sandbox's stored evidence by the policies in
// force, now.
func (s *Server) judgeKept(ctx context.Context, node store.Node, st *store.SandboxState) (policy.Verdict, error) {
	ev, err := decodeEvidence(st.Evidence)
	if err != nil {
		return policy.Verdict{}, s.storeStatus(ctx, "sandbox "+st.SandboxID, err)
	}
	v, sigs, err := ev.judged(node, s.now())
	if err != nil { // the stored firmware log replayed once: it does again
		return policy.Verdict{Reasons: []string{status.Convert(err).Message()}}, nil
	}
	j := s.judge(ctx, v, sigs)
	if !j.Allow && len(j.Reasons) == 0 {
		j.Reasons = []string{"denied by policy"}
	}
	return j, nil
}

// secretDeleted revokes the deleted secret from every kept sandbox that
// holds it.
func (s *Server) secretDeleted(ctx context.Context, name string) error {
	sts, err := s.keptSandboxes(ctx, "", func(st *store.SandboxState) bool { return st.Verdict == store.SandboxAllow && holds(st, name) >= 0 })
	if err != nil {
		return err
	}
	for _, st := range sts {
		if _, err := s.revoke(ctx, st, []string{name}, fmt.Sprintf("secret %q was deleted by an administrator", name)); err != nil {
			return err
		}
	}
	return nil
}

func holds(st *store.SandboxState, name string) int {
	return slices.IndexFunc(st.Secrets, func(x store.SandboxSecret) bool { return x.Name == name })
}

// secretRotated sends a secret's new version to every kept sandbox that
// holds an older one and that the policy in force still allows (one it no
// longer allows is revoked instead), wrapped to its guest key.
func (s *Server) secretRotated(ctx context.Context, name string, version uint64) error {
	sts, err := s.keptSandboxes(ctx, "", func(st *store.SandboxState) bool {
		i := holds(st, name)
		return st.Verdict == store.SandboxAllow && i >= 0 && st.Secrets[i].Version < version
	})
	if err != nil {
		return err
	}
	for _, st := range sts {
		node, err := s.st.GetNode(ctx, st.NodeID)
		if err != nil {
			continue
		}
		if node.State == store.NodeRevoked {
			continue // revokeNode's business
		}
		j, err := s.judgeKept(ctx, node, &st)
		if err != nil {
			return err
		}
		if !j.Allow {
			if _, err := s.revoke(ctx, st, nil, append([]string{"judged again for a secret rotation: the policy in force no longer allows it"}, j.Reasons...)...); err != nil {
				return err
			}
			continue
		}
		if !slices.Contains(j.Secrets, name) {
			continue // no longer granted: the next policy reload's business
		}
		w, err := s.vault.Release(ctx, []string{name}, st.GuestPublicKey, st.SandboxID)
		if err != nil {
			return s.storeStatus(ctx, "rotation of secret "+name, err)
		}
		d := store.Decision{NodeID: st.NodeID, SandboxID: st.SandboxID, Kind: store.DecisionRotate, CreatedAt: s.now()}
		for _, x := range w {
			d.Secrets = append(d.Secrets, store.DecisionSecret{Name: x.Name, Version: x.Version, Wrapped: x.Sealed})
			st.Secrets[holds(&st, x.Name)].Version = x.Version
		}
		if d, err = s.st.AppendDecision(ctx, d); err != nil {
			return s.storeStatus(ctx, "rotation of secret "+name, err)
		}
		if err := s.st.PutSandbox(ctx, st); err != nil && !errors.Is(err, store.ErrNotFound) {
			return s.storeStatus(ctx, "rotation of secret "+name, err)
		}
		details, _ := json.Marshal(map[string]any{"event": "secret.rotate", "sandbox": st.SandboxID, "seq": d.Seq, "name": name, "version": version})
		if err := s.appendAudit(ctx, store.AuditEntry{Kind: store.KindRelease, NodeID: st.NodeID, Subject: st.SandboxID, Details: details}); err != nil {
			s.log.ErrorContext(ctx, "audit of a rotation failed", "node", st.NodeID, "sandbox", st.SandboxID, "error", err)
		}
		s.metrics.Decisions.WithLabelValues(string(store.DecisionRotate)).Inc()
		s.log.InfoContext(ctx, "secret rotated to a running sandbox", "node", st.NodeID, "sandbox", st.SandboxID, "name", name, "version", version, "seq", d.Seq)
		s.watchers.notify(st.NodeID)
	}
	return nil
}

// sandboxCollector exports bulwark_attestd_sandboxes{verdict}: the kept
// sandboxes by effective verdict (allow, deny, revoked, stale), read from
// the store at each scrape.
type sandboxCollector struct {
	s    *Server
	desc *prometheus.Desc
}

func (c *sandboxCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *sandboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sts, err := c.s.st.ListSandboxStates(ctx, "")
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	now := c.s.now()
	counts := map[store.SandboxVerdict]int{store.SandboxAllow: 0, store.SandboxDeny: 0, store.SandboxRevoked: 0, store.SandboxStale: 0, store.SandboxEnded: 0}
	for i := range sts {
		counts[sts[i].Effective(now)]++
	}
	for v, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), string(v))
	}
}

// registerSandboxMetrics registers the collector once per registry.
func (s *Server) registerSandboxMetrics() {
	c := &sandboxCollector{s: s, desc: prometheus.NewDesc("bulwark_attestd_sandboxes",
		"Sandboxes attestd keeps (re-attested by their host service), by verdict: allow, deny, revoked, stale (no fresh verdict within twice the interval), ended (its END record is in the node's verified launch log).",
		[]string{"verdict"}, nil)}
	if err := s.metrics.Registry.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			s.log.Error("registering the sandbox metrics", "error", err)
		}
	}
}
