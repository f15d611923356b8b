package attestd

import (
	"context"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"google.golang.org/grpc/codes"
)

// end records sandbox id's END in the host's log, as the host does.
func (h *host) end(id, reason string) {
	h.t.Helper()
	_, err := h.log.AppendEnd(&measure.EndEvent{SandboxID: id, Reason: reason, Time: time.Now().UTC()}, limits.DefaultLaunchPCR,
		[]measure.Alg{measure.SHA256}, func(a measure.Alg, pcr int, d []byte) error {
			return h.tpm.Extend(context.Background(), pcr, d)
		})
	if err != nil {
		h.t.Fatal(err)
	}
}

// forgeEnd records an END for id whatever the log holds (the host's own
// check passed over), extended into the launch PCR: a log attestd must
// refuse although it replays.
func (h *host) forgeEnd(id string) {
	h.t.Helper()
	content, err := measure.EndContentTLV(&measure.EndEvent{SandboxID: id, Reason: measure.EndStopped, Time: time.Now().UTC()})
	if err != nil {
		h.t.Fatal(err)
	}
	d := sha256.Sum256(content)
	if err := h.tpm.Extend(context.Background(), limits.DefaultLaunchPCR, d[:]); err != nil {
		h.t.Fatal(err)
	}
	rec := measure.Record{RecNum: uint64(h.log.Len()), PCR: limits.DefaultLaunchPCR,
		Digests: []measure.Digest{{Alg: measure.SHA256, Digest: d[:]}}, Content: content}
	lg, err := measure.ParseLog(append(h.log.Encode(), measure.EncodeRecord(&rec)...))
	if err != nil {
		h.t.Fatal(err)
	}
	h.log = *lg
}

func TestEndRecordsEmbedded(t *testing.T) { testEndRecords(t, "embedded") }

func TestEndRecordsPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL (skipped with -short)")
	}
	testEndRecords(t, "postgres")
}

// testEndRecords: an END record never counts as a second launch, is
// verified across the incremental prefix, and a sandbox whose END is in
// the verified log is never judged alive: Attest and ReleaseSecrets
// refuse it, naming the end, and continuous attestation reports it ended
// (not stale, not allowed). An END that ends no launch, or a second END,
// is refused.
func testEndRecords(t *testing.T, storeKind string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h, e, attest, launch := endEnv(t, ctx, storeKind)

	// Kept sandboxes a and k, and c (one-shot) whose secrets are not
	// released yet.
	a, _ := launch(h, 2)
	k, _ := launch(h, 2)
	c, rc := launch(h, 0)

	// c ends; the next launch's attestation carries c's END after the
	// prefix (whose c launch it checks against the stored record): the
	// END is no second launch of c, and d is allowed.
	h.end(c, measure.EndStopped)
	d, _ := launch(h, 0)
	if _, err := attest(h, d, 0); err != nil {
		t.Fatalf("attesting d again across c's END: %v", err)
	}

	// c has ended: its release and any attestation of it are refused,
	// naming the end — incrementally (END in the prefix) and whole.
	_, err := e.client.Release(ctx, rc.GetAttestationId())
	wantCode(t, err, codes.PermissionDenied, "release", "has ended", "END record")
	_, err = attest(h, c, 0)
	wantCode(t, err, codes.PermissionDenied, "sandbox_id", "has ended", "END record 3")
	nonce, _ := e.prefixChallenge(t, ctx, h.nodeID)
	_, err = e.client.Attest(ctx, h.attestRequest(ctx, nonce, c))
	wantCode(t, err, codes.PermissionDenied, "sandbox_id", "has ended", "END record 3 (stopped)")

	// Continuous attestation: a that ended is reported ended, even when
	// the host still names it (it ended between listing and quoting), and
	// never turns stale; k that the host reports ended is kept as ended.
	h.end(a, measure.EndExited)
	h.end(k, measure.EndRevoked)
	nonce, _ = e.prefixChallenge(t, ctx, h.nodeID)
	req := h.reattestRequest(ctx, nonce, 2, a)
	req.EndedSandboxIds = []string{k}
	r, err := e.client.Attest(ctx, req)
	if err != nil {
		t.Fatalf("re-attestation: %v", err)
	}
	if v := r.GetSandboxes()[0]; v.GetVerdict() != bulwarkv1.Verdict_VERDICT_DENY || !strings.Contains(strings.Join(v.GetReasons(), " "), "ended: the sandbox's END record") {
		t.Fatalf("re-attestation of an ended sandbox: %v", v)
	}
	e.clock.Advance(time.Hour)
	sbs := e.sandboxes(t, ctx)
	for _, id := range []string{a, k} {
		if sbs[id].GetVerdict() != "ended" || !strings.Contains(strings.Join(sbs[id].GetReasons(), " "), "END record") || len(sbs[id].GetSecrets()) != 0 {
			t.Fatalf("ctl sandboxes after %s ended: %v", id, sbs[id])
		}
	}
	if g := e.sandboxGauge(t, "ended"); g != 2 {
		t.Fatalf("bulwark_attestd_sandboxes{verdict=ended} = %v, want 2", g)
	}
	nonce, _ = e.prefixChallenge(t, ctx, h.nodeID)
	if r, err := e.client.Attest(ctx, h.reattestRequest(ctx, nonce, 2, a)); err != nil || r.GetSandboxes()[0].GetVerdict() != bulwarkv1.Verdict_VERDICT_DENY {
		t.Fatalf("an ended sandbox re-attested: %v, %v", r, err)
	}

}

// endEnv is a host enrolled with an attestd, the secrets the test policy
// grants, and two helpers: attest attests sandbox id incrementally, as
// the launcher does (the records after attestd's prefix, and the
// sandbox's own record when it lies in the prefix), and launch launches a
// sandbox and attests it (allowed), kept with a non-zero interval.
func endEnv(t *testing.T, ctx context.Context, storeKind string) (*host, *env,
	func(x *host, id string, interval uint32) (*bulwarkv1.AttestResponse, error),
	func(x *host, interval uint32) (string, *bulwarkv1.AttestResponse)) {
	h := newHost(t, "sim")
	e := newEnv(t, envOptions{storeKind: storeKind, ekAllow: []string{h.nodeID}})
	h.enroll(ctx, e.client)
	e.putSecrets(t)
	key := newGuestKey(t)
	attest := func(x *host, id string, interval uint32) (*bulwarkv1.AttestResponse, error) {
		t.Helper()
		nonce, p := e.prefixChallenge(t, ctx, x.nodeID)
		req := x.incrRequest(ctx, nonce, id, int(p.GetEvents()))
		req.ReattestIntervalSeconds = interval
		return e.client.Attest(ctx, req)
	}
	launch := func(x *host, interval uint32) (string, *bulwarkv1.AttestResponse) {
		t.Helper()
		ev := testEvent(t, testPolicyName, key.PublicKey())
		x.launch(ev)
		r, err := attest(x, ev.SandboxID, interval)
		wantAllow(t)(r, err)
		return ev.SandboxID, r
	}
	return h, e, attest, launch
}

// TestEndWithoutLaunchRefused: an END for a sandbox the log never
// launched is refused, incremental (the prefix holds the launches: the
// END is checked against it) or whole.
func TestEndWithoutLaunchRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h2, e, attest, launch := endEnv(t, ctx, "embedded")
	launch(h2, 0)
	h2.forgeEnd("0123456789abcdef0123456789abcdef")
	ev := testEvent(t, testPolicyName, newGuestKey(t).PublicKey())
	h2.launch(ev)
	_, err := attest(h2, ev.SandboxID, 0)
	wantCode(t, err, codes.PermissionDenied, "launch_log", "record 1 is an END record", "does not launch before it")
	nonce, _ := e.prefixChallenge(t, ctx, h2.nodeID)
	_, err = e.client.Attest(ctx, h2.attestRequest(ctx, nonce, ev.SandboxID))
	wantCode(t, err, codes.PermissionDenied, "launch_log", "does not launch before it")
}

// TestSecondEndRefused: a second END for a sandbox whose END attestd
// verified already (in the prefix) is refused.
func TestSecondEndRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h3, _, attest, launch := endEnv(t, ctx, "embedded")
	x, _ := launch(h3, 0)
	h3.end(x, measure.EndExited)
	y, _ := launch(h3, 0)
	h3.forgeEnd(x)
	_, err := attest(h3, y, 0)
	wantCode(t, err, codes.PermissionDenied, "launch_log", "second END record", "record 1")
}
