package attestd

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/measure"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
)

// reattestRequest quotes the host's whole log for a re-attestation of ids.
func (h *host) reattestRequest(ctx context.Context, nonce []byte, interval uint32, ids ...string) *bulwarkv1.AttestRequest {
	req := h.attestRequest(ctx, nonce, "")
	req.SandboxIds, req.ReattestIntervalSeconds = ids, interval
	return req
}

// watch opens a WatchNode stream after seq and reads its opening
// heartbeat.
func (e *env) watch(t *testing.T, ctx context.Context, h *host, after uint64) bulwarkv1.Attestation_WatchNodeClient {
	t.Helper()
	ch, err := e.client.Attestation.Challenge(ctx, &bulwarkv1.ChallengeRequest{NodeId: h.nodeID, Watch: true})
	if err != nil {
		t.Fatalf("Challenge: %v", err)
	}
	q := h.attestRequest(ctx, ch.GetNonce(), "")
	st, err := e.client.Attestation.WatchNode(ctx, &bulwarkv1.WatchNodeRequest{NodeId: h.nodeID, Nonce: q.Nonce, Quote: q.Quote,
		Signature: q.Signature, Pcrs: q.Pcrs, AfterSeq: after})
	if err != nil {
		t.Fatalf("WatchNode: %v", err)
	}
	d, err := st.Recv()
	if err != nil || !d.GetHeartbeat() || d.GetSeq() != after {
		t.Fatalf("first message %v, %v; want a heartbeat at %d", d, err, after)
	}
	return st
}

// next reads the next decision (heartbeats skipped).
func next(t *testing.T, st bulwarkv1.Attestation_WatchNodeClient) *bulwarkv1.NodeDecision {
	t.Helper()
	for {
		d, err := st.Recv()
		if err != nil {
			t.Fatalf("WatchNode: %v", err)
		}
		if !d.GetHeartbeat() {
			return d
		}
	}
}

// sandboxes lists the kept sandboxes by id.
func (e *env) sandboxes(t *testing.T, ctx context.Context) map[string]*bulwarkv1.SandboxState {
	t.Helper()
	r, err := e.admin.Admin.ListSandboxes(ctx, &bulwarkv1.ListSandboxesAdminRequest{})
	if err != nil {
		t.Fatalf("ListSandboxes: %v", err)
	}
	out := map[string]*bulwarkv1.SandboxState{}
	for _, s := range r.GetSandboxes() {
		out[s.GetSandboxId()] = s
	}
	return out
}

// sandboxGauge reads bulwark_attestd_sandboxes{verdict}.
func (e *env) sandboxGauge(t *testing.T, verdict string) float64 {
	t.Helper()
	mfs, err := e.srv.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "bulwark_attestd_sandboxes" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetValue() == verdict }) {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no bulwark_attestd_sandboxes{verdict=%q}", verdict)
	return 0
}

func (e *env) reloadPolicy(t *testing.T, ctx context.Context, kernel string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(e.policyDir, "test.yaml"), []byte(testPolicyYAML(testPolicyName, kernel)), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := e.admin.Admin.ReloadPolicies(ctx, &bulwarkv1.ReloadPoliciesRequest{})
	if err != nil || !r.GetOk() {
		t.Fatalf("ReloadPolicies: %v, %v", r, err)
	}
}

func TestContinuousAttestationEmbedded(t *testing.T) { testContinuousAttestation(t, "embedded") }

func TestContinuousAttestationPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL (skipped with -short)")
	}
	testContinuousAttestation(t, "postgres")
}

// testContinuousAttestation: kept sandboxes are re-attested by one quote,
// go stale without it (and are then never reported allowed), receive
// rotated secrets, and are revoked — by a policy change judged from the
// stored evidence, a deleted secret, a revoked node — through WatchNode,
// which replays what a host missed while disconnected.
func testContinuousAttestation(t *testing.T, storeKind string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h := newHost(t, "sim")
	e := newEnv(t, envOptions{storeKind: storeKind, ekAllow: []string{h.nodeID}})
	h.enroll(ctx, e.client)
	e.putSecrets(t)
	key := newGuestKey(t)
	launch := func(interval uint32) string {
		t.Helper()
		ev := testEvent(t, testPolicyName, key.PublicKey())
		h.launch(ev)
		nonce, _ := e.prefixChallenge(t, ctx, h.nodeID)
		req := h.attestRequest(ctx, nonce, ev.SandboxID)
		req.ReattestIntervalSeconds = interval
		wantAllow(t)(e.client.Attest(ctx, req))
		return ev.SandboxID
	}
	reattest := func(ids ...string) *bulwarkv1.AttestResponse {
		t.Helper()
		nonce, _ := e.prefixChallenge(t, ctx, h.nodeID)
		r, err := e.client.Attest(ctx, h.reattestRequest(ctx, nonce, 2, ids...))
		if err != nil {
			t.Fatalf("re-attestation: %v", err)
		}
		if len(r.GetSandboxes()) != len(ids) {
			t.Fatalf("%d verdicts for %d sandboxes", len(r.GetSandboxes()), len(ids))
		}
		return r
	}

	// A one-shot launch (no interval) is not kept; the host service's are.
	oneShot := launch(0)
	a, b := launch(2), launch(2)
	sbs := e.sandboxes(t, ctx)
	if len(sbs) != 2 || sbs[a].GetVerdict() != "allow" || sbs[a].GetIntervalSeconds() != 2 || strings.Join(sbs[a].GetSecrets(), ",") != "db-password,api-token" {
		t.Fatalf("kept after launch: %v", sbs)
	}
	r := reattest(a, b, oneShot)
	for i, want := range []bulwarkv1.Verdict{bulwarkv1.Verdict_VERDICT_ALLOW, bulwarkv1.Verdict_VERDICT_ALLOW, bulwarkv1.Verdict_VERDICT_DENY} {
		if got := r.GetSandboxes()[i].GetVerdict(); got != want {
			t.Fatalf("sandbox %d: %v (%q), want %v", i, got, r.GetSandboxes()[i].GetReasons(), want)
		}
	}
	if !strings.Contains(strings.Join(r.GetSandboxes()[2].GetReasons(), " "), "not kept") || r.GetVerdict() != bulwarkv1.Verdict_VERDICT_DENY {
		t.Fatalf("the one-shot sandbox: %v", r.GetSandboxes()[2])
	}

	// Stale: no re-attestation within twice the interval. Never "allow".
	e.clock.Advance(4 * time.Second)
	if v := e.sandboxes(t, ctx)[a].GetVerdict(); v != "allow" {
		t.Fatalf("at twice the interval: %s", v)
	}
	e.clock.Advance(time.Second)
	sbs = e.sandboxes(t, ctx)
	if sbs[a].GetVerdict() != "stale" || sbs[b].GetVerdict() != "stale" || sbs[a].GetAgeSeconds() < 5 {
		t.Fatalf("after the window: %v", sbs)
	}
	if e.sandboxGauge(t, "stale") != 2 || e.sandboxGauge(t, "allow") != 0 {
		t.Fatalf("metrics: stale %v, allow %v", e.sandboxGauge(t, "stale"), e.sandboxGauge(t, "allow"))
	}
	reattest(a, b)
	if v := e.sandboxes(t, ctx)[a].GetVerdict(); v != "allow" || e.sandboxGauge(t, "allow") != 2 {
		t.Fatalf("after a re-attestation: %s", v)
	}

	// Rotation: a new version reaches both, wrapped to the guest key.
	wctx, wcancel := context.WithCancel(ctx)
	w := e.watch(t, wctx, h, 0)
	if _, err := e.admin.Admin.PutSecret(ctx, &bulwarkv1.PutSecretRequest{Name: "db-password", Value: []byte("v2")}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	var last uint64
	for range 2 {
		d := next(t, w)
		if d.GetKind() != bulwarkv1.NodeDecision_KIND_ROTATE || len(d.GetSecrets()) != 1 || d.GetSecrets()[0].GetName() != "db-password" {
			t.Fatalf("rotation: %v", d)
		}
		pt, err := key.Open(d.GetSandboxId(), "db-password", d.GetSecrets()[0].GetWrapped())
		if err != nil || string(pt) != "v2" {
			t.Fatalf("rotated secret: %q, %v", pt, err)
		}
		got[d.GetSandboxId()], last = true, d.GetSeq()
	}
	if !got[a] || !got[b] || last != 2 {
		t.Fatalf("rotated to %v, last seq %d", got, last)
	}

	// A policy change while the host is away: judged from the stored
	// evidence, both revoked; the host gets both when it comes back.
	wcancel()
	e.reloadPolicy(t, ctx, measure.DigestBytes(measure.SHA256, []byte("another kernel")))
	sbs = e.sandboxes(t, ctx)
	if sbs[a].GetVerdict() != "revoked" || sbs[b].GetVerdict() != "revoked" {
		t.Fatalf("after the policy change: %v", sbs)
	}
	w = e.watch(t, ctx, h, last)
	got = map[string]bool{}
	for range 2 {
		d := next(t, w)
		if d.GetKind() != bulwarkv1.NodeDecision_KIND_REVOKE || d.GetAction() != "stop" || d.GetSeq() <= last || len(d.GetSecrets()) != 0 ||
			!strings.Contains(strings.Join(d.GetReasons(), " "), "kernel") {
			t.Fatalf("revocation: %v", d)
		}
		got[d.GetSandboxId()], last = true, d.GetSeq()
	}
	if !got[a] || !got[b] {
		t.Fatalf("revoked %v", got)
	}
	if r := reattest(a); r.GetSandboxes()[0].GetVerdict() != bulwarkv1.Verdict_VERDICT_DENY {
		t.Fatalf("a revoked sandbox re-attested: %v", r.GetSandboxes()[0])
	}

	// A deleted secret leaves the sandboxes that hold it (and, by the
	// default on_revoke, stops them); a revoked node revokes all of its
	// sandboxes, and may still watch (revocations only).
	e.reloadPolicy(t, ctx, testKernel)
	// A sandbox the host says ended is forgotten, not left stale; a
	// re-attestation may name only ended ones.
	gone := launch(2)
	nonce, _ := e.prefixChallenge(t, ctx, h.nodeID)
	req := h.reattestRequest(ctx, nonce, 2)
	req.EndedSandboxIds = []string{gone, "never-kept"}
	if _, err := e.client.Attest(ctx, req); err != nil {
		t.Fatalf("re-attestation of ended sandboxes only: %v", err)
	}
	if _, ok := e.sandboxes(t, ctx)[gone]; ok {
		t.Fatal("an ended sandbox is still kept")
	}

	c := launch(2)
	if _, err := e.admin.Admin.DeleteSecret(ctx, &bulwarkv1.DeleteSecretRequest{Name: "api-token"}); err != nil {
		t.Fatal(err)
	}
	d := next(t, w)
	if d.GetKind() != bulwarkv1.NodeDecision_KIND_REVOKE || d.GetSandboxId() != c || len(d.GetSecrets()) != 1 || d.GetSecrets()[0].GetName() != "api-token" {
		t.Fatalf("secret deletion: %v", d)
	}
	if v := e.sandboxes(t, ctx)[c].GetVerdict(); v != "revoked" { // on_revoke: stop
		t.Fatalf("after its secret was deleted: %s", v)
	}
	dd := launch(2)
	if _, err := e.admin.Admin.RevokeNode(ctx, &bulwarkv1.RevokeNodeRequest{NodeId: h.nodeID}); err != nil {
		t.Fatal(err)
	}
	d = next(t, w)
	if d.GetKind() != bulwarkv1.NodeDecision_KIND_REVOKE || d.GetSandboxId() != dd || len(d.GetSecrets()) != 0 || !strings.Contains(d.GetReasons()[0], "node was revoked") {
		t.Fatalf("node revocation: %v", d)
	}
	w = e.watch(t, ctx, h, 0)
	n := 0
	for n < 4 { // 2 policy + 1 secret + 1 node revocations; the rotations are not sent to a revoked node
		if d := next(t, w); d.GetKind() != bulwarkv1.NodeDecision_KIND_REVOKE {
			t.Fatalf("a revoked node was sent %v", d)
		}
		n++
	}
}

// TestWatchNodeRefusals: WatchNode needs a fresh quote by the node's AK.
func TestWatchNodeRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := newHost(t, "sim")
	e := newEnv(t, envOptions{ekAllow: []string{h.nodeID}})
	h.enroll(ctx, e.client)
	watchReq := func(quoted, nonce []byte) *bulwarkv1.WatchNodeRequest {
		r := h.attestRequest(ctx, quoted, "")
		return &bulwarkv1.WatchNodeRequest{NodeId: h.nodeID, Nonce: nonce, Quote: r.Quote, Signature: r.Signature, Pcrs: r.Pcrs}
	}
	open := func(req *bulwarkv1.WatchNodeRequest) error {
		st, err := e.client.Attestation.WatchNode(ctx, req)
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	nonce := func() []byte {
		ch, err := e.client.Attestation.Challenge(ctx, &bulwarkv1.ChallengeRequest{NodeId: h.nodeID, Watch: true})
		if err != nil {
			t.Fatal(err)
		}
		return ch.GetNonce()
	}
	used := nonce()
	if err := open(watchReq(used, used)); err != nil {
		t.Fatalf("a good request: %v", err)
	}
	tests := []struct {
		name string
		req  *bulwarkv1.WatchNodeRequest
		code codes.Code
		sub  string
	}{
		{"replayed nonce", watchReq(used, used), codes.PermissionDenied, "nonce"},
		{"a quote over another nonce", watchReq(nonce(), nonce()), codes.PermissionDenied, "quote"},
		{"no nonce", &bulwarkv1.WatchNodeRequest{NodeId: h.nodeID}, codes.InvalidArgument, "nonce"},
		{"unknown node", func() *bulwarkv1.WatchNodeRequest {
			n := nonce()
			r := watchReq(n, n)
			r.NodeId = "sha256:" + strings.Repeat("0", 64)
			return r
		}(), codes.NotFound, "node_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, open(tc.req), tc.code, tc.sub)
		})
	}
}

// TestReattestValidation: a re-attestation names its sandboxes once each.
func TestReattestValidation(t *testing.T) {
	base := func() *bulwarkv1.AttestRequest {
		return &bulwarkv1.AttestRequest{NodeId: "sha256:" + strings.Repeat("a", 64), Nonce: make([]byte, NonceSize), Quote: []byte{1},
			Signature: []byte{1}, Pcrs: map[uint32][]byte{23: make([]byte, 32)}, LaunchLog: []byte{1}}
	}
	tests := []struct {
		name  string
		edit  func(*bulwarkv1.AttestRequest)
		field string
	}{
		{"both", func(r *bulwarkv1.AttestRequest) { r.SandboxId, r.SandboxIds = "a", []string{"b"} }, "sandbox_ids"},
		{"twice", func(r *bulwarkv1.AttestRequest) { r.SandboxIds = []string{"b", "b"} }, "sandbox_ids[1]"},
		{"running and ended", func(r *bulwarkv1.AttestRequest) { r.SandboxIds, r.EndedSandboxIds = []string{"b"}, []string{"b"} }, "ended_sandbox_ids[0]"},
		{"ended and one", func(r *bulwarkv1.AttestRequest) { r.SandboxId, r.EndedSandboxIds = "a", []string{"b"} }, "sandbox_ids"},
		{"bad id", func(r *bulwarkv1.AttestRequest) { r.SandboxIds = []string{"b", "c/d"} }, "sandbox_ids[1]"},
		{"too many", func(r *bulwarkv1.AttestRequest) {
			for i := range MaxReattestSandboxes + 1 {
				r.SandboxIds = append(r.SandboxIds, strings.Repeat("x", i%100+1)+string(rune('a'+i/100)))
			}
		}, "sandbox_ids"},
		{"record", func(r *bulwarkv1.AttestRequest) { r.SandboxIds, r.SandboxRecord = []string{"b"}, []byte{1} }, "sandbox_record"},
		{"interval", func(r *bulwarkv1.AttestRequest) { r.SandboxId, r.ReattestIntervalSeconds = "a", MaxReattestInterval+1 }, "reattest_interval_seconds"},
		{"none", func(r *bulwarkv1.AttestRequest) {}, "sandbox_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			tc.edit(r)
			wantCode(t, validateAttest(r), codes.InvalidArgument, tc.field)
		})
	}
}
