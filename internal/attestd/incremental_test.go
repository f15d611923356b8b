package attestd

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm"
	"google.golang.org/grpc/codes"
)

// prefixChallenge asks for a nonce and the launch log prefix attestd holds.
func (e *env) prefixChallenge(t *testing.T, ctx context.Context, node string) ([]byte, *bulwarkv1.LaunchLogPrefix) {
	t.Helper()
	r, err := e.client.Attestation.Challenge(ctx, &bulwarkv1.ChallengeRequest{NodeId: node, LaunchLogPrefix: true})
	if err != nil {
		t.Fatalf("Challenge: %v", err)
	}
	return r.GetNonce(), r.GetLaunchLogPrefix()
}

// incrRequest is attestRequest with only the records from offset on, and
// the sandbox's own record when it lies before offset.
func (h *host) incrRequest(ctx context.Context, nonce []byte, sandbox string, offset int) *bulwarkv1.AttestRequest {
	req := h.attestRequest(ctx, nonce, sandbox)
	req.LaunchLogOffset, req.LaunchLog = uint64(offset), h.log.EncodeFrom(offset)
	for i, r := range h.log.Records()[:offset] {
		if r.Event != nil && r.Event.SandboxID == sandbox { // its launch, not its END
			req.SandboxRecord = measure.EncodeRecord(&h.log.Records()[i])
		}
	}
	return req
}

// wantAllow returns a check of an Attest call's results: allowed.
func wantAllow(t *testing.T) func(*bulwarkv1.AttestResponse, error) {
	return func(r *bulwarkv1.AttestResponse, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
			t.Fatalf("verdict %v: %q", r.GetVerdict(), r.GetReasons())
		}
	}
}

func TestIncrementalLaunchLogEmbedded(t *testing.T) { testIncrementalLaunchLog(t, "embedded") }

func TestIncrementalLaunchLogPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL (skipped with -short)")
	}
	testIncrementalLaunchLog(t, "postgres")
}

// testIncrementalLaunchLog: once attestd has verified a host's log, the
// host sends only the records after it; every way to abuse that is
// refused, and none is silently accepted.
func testIncrementalLaunchLog(t *testing.T, storeKind string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h := newHost(t, "sim")
	e := newEnv(t, envOptions{storeKind: storeKind, ekAllow: []string{h.nodeID}})
	h.enroll(ctx, e.client)
	guest := newGuestKey(t).PublicKey()
	var ids []string
	launch := func(n int) {
		for range n {
			ev := testEvent(t, testPolicyName, guest)
			h.launch(ev)
			ids = append(ids, ev.SandboxID)
		}
	}
	attest := func(req *bulwarkv1.AttestRequest) (*bulwarkv1.AttestResponse, error) {
		return e.client.Attest(ctx, req)
	}

	// Nothing verified yet: no prefix, and an offset is refused with the
	// reason the host reacts to.
	launch(3)
	nonce, p := e.prefixChallenge(t, ctx, h.nodeID)
	if p != nil {
		t.Fatalf("prefix before any attestation: %v", p)
	}
	_, err := attest(h.incrRequest(ctx, nonce, ids[2], 2))
	wantCode(t, err, codes.FailedPrecondition, "launch_log_offset", "holds no verified launch log", "send the whole launch log")
	if !IsLaunchLogPrefixUnknown(err) {
		t.Fatalf("no ErrorInfo reason on %v", err)
	}

	// The whole log, as before: attestd remembers it.
	nonce, _ = e.prefixChallenge(t, ctx, h.nodeID)
	wantAllow(t)(attest(h.attestRequest(ctx, nonce, ids[1])))
	nonce, p = e.prefixChallenge(t, ctx, h.nodeID)
	pcrs, _ := h.tpm.ReadPCRs(ctx, int(e.srv.launchPCR))
	if p.GetEvents() != 3 || string(p.GetPcrValue()) != string(pcrs[int(e.srv.launchPCR)]) {
		t.Fatalf("prefix after a whole log: %d events, PCR %x", p.GetEvents(), p.GetPcrValue())
	}

	// Two launches since: only they are sent.
	launch(2)
	req := h.incrRequest(ctx, nonce, ids[4], 3)
	if len(req.LaunchLog) >= len(h.log.Encode())/2 {
		t.Fatalf("incremental request carries %d of %d bytes", len(req.LaunchLog), len(h.log.Encode()))
	}
	wantAllow(t)(attest(req))

	// A sandbox in the prefix: its record comes along, and must be the one
	// attestd verified; nothing new launched, so the log part is empty.
	nonce, p = e.prefixChallenge(t, ctx, h.nodeID)
	if p.GetEvents() != 5 {
		t.Fatalf("prefix %d events, want 5", p.GetEvents())
	}
	req = h.incrRequest(ctx, nonce, ids[0], 5)
	if len(req.LaunchLog) != 0 || len(req.SandboxRecord) == 0 {
		t.Fatalf("log %d bytes, sandbox record %d bytes", len(req.LaunchLog), len(req.SandboxRecord))
	}
	wantAllow(t)(attest(req))

	for _, tc := range []struct {
		name   string
		mutate func(r *bulwarkv1.AttestRequest)
		code   codes.Code
		want   []string
	}{
		{"sandbox record missing", func(r *bulwarkv1.AttestRequest) { r.SandboxRecord = nil },
			codes.InvalidArgument, []string{"sandbox_record: missing", "record 0"}},
		{"another sandbox's record", func(r *bulwarkv1.AttestRequest) { r.SandboxRecord = measure.EncodeRecord(&h.log.Records()[1]) },
			codes.PermissionDenied, []string{"sandbox_record", "not the record 0"}},
		{"a forged record for the sandbox", func(r *bulwarkv1.AttestRequest) {
			var l measure.Log
			ev := *h.log.Records()[0].Event
			ev.Kernel = measure.DigestBytes(measure.SHA256, []byte("another kernel"))
			l.Append(&ev, int(e.srv.launchPCR), nil, nil)
			r.SandboxRecord = measure.EncodeRecord(&l.Records()[0])
		}, codes.PermissionDenied, []string{"sandbox_record", "not the record 0"}},
		{"offset past the prefix", func(r *bulwarkv1.AttestRequest) { r.LaunchLogOffset = 6 },
			codes.FailedPrecondition, []string{"6 is past the 5 records"}},
		{"a record the TPM never saw", func(r *bulwarkv1.AttestRequest) {
			l, _ := measure.ParseLogFrom(nil, 5)
			l.Append(h.log.Records()[4].Event, int(e.srv.launchPCR), nil, nil)
			r.LaunchLog = l.EncodeFrom(0)
		}, codes.PermissionDenied, []string{"launch_log: replay of 1 events from record 5", "log edited or incomplete"}},
		{"records missing after the offset", func(r *bulwarkv1.AttestRequest) {
			r.LaunchLogOffset, r.LaunchLog = 4, nil
		}, codes.PermissionDenied, []string{"replay of 0 events from record 4"}},
		{"records numbered from 0 after an offset", func(r *bulwarkv1.AttestRequest) {
			r.LaunchLogOffset, r.LaunchLog = 4, h.log.EncodeFrom(0)
		}, codes.InvalidArgument, []string{"launch_log", "out of sequence"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nonce, _ := e.prefixChallenge(t, ctx, h.nodeID)
			r := h.incrRequest(ctx, nonce, ids[0], 5)
			tc.mutate(r)
			_, err := attest(r)
			wantCode(t, err, tc.code, tc.want...)
		})
	}

	// An offset inside the prefix (the host read an older prefix: another
	// attestation went further meanwhile) replays from the stored value
	// there.
	nonce, _ = e.prefixChallenge(t, ctx, h.nodeID)
	wantAllow(t)(attest(h.incrRequest(ctx, nonce, ids[4], 3)))

	// A duplicate sandbox id across the prefix boundary is still refused:
	// the id's first event is in the prefix, its second in the new part.
	dup := testEvent(t, testPolicyName, guest)
	dup.SandboxID = ids[1]
	h.launch(dup)
	nonce, _ = e.prefixChallenge(t, ctx, h.nodeID)
	_, err = attest(h.incrRequest(ctx, nonce, ids[1], 5))
	wantCode(t, err, codes.PermissionDenied, "sandbox_id", "2 events for sandbox", "launched once")
	// ... and the whole log says the same.
	nonce, _ = e.prefixChallenge(t, ctx, h.nodeID)
	_, err = attest(h.attestRequest(ctx, nonce, ids[1]))
	wantCode(t, err, codes.PermissionDenied, "2 events for sandbox")
	launch(1)

	// A forged prefix (a store written by something other than attestd's
	// checks: the same boot cycle, a PCR value the TPM never held) is
	// refused, never replayed from, incrementally or whole.
	held, err := e.st.ReadLaunchPrefix(ctx, h.nodeID, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	forged := held.Prefix
	forged.Events, forged.PCR = forged.Events+1, make([]byte, 32)
	forged.PCR[0] = 1
	if _, err := e.st.AdvanceLaunchPrefix(ctx, forged, []store.PrefixRecord{{RecNum: forged.Events - 1, SandboxID: "forged", Digest: make([]byte, 32), PCR: forged.PCR}}); err != nil {
		t.Fatal(err)
	}
	nonce, _ = e.prefixChallenge(t, ctx, h.nodeID)
	_, err = attest(h.incrRequest(ctx, nonce, ids[len(ids)-1], int(forged.Events)))
	wantCode(t, err, codes.PermissionDenied, "launch_log: replay", "log edited or incomplete")
	nonce, _ = e.prefixChallenge(t, ctx, h.nodeID)
	_, err = attest(h.attestRequest(ctx, nonce, ids[len(ids)-1]))
	wantCode(t, err, codes.PermissionDenied, "but attestd verified", "in this TPM boot cycle")
}

// TestLaunchLogPrefixVoidAfterReset: a host whose TPM resets (a reboot:
// swtpm stopped and started again, same EK and AK, PCRs zero, reset count
// changed) starts a new log; attestd's prefix is void, an offset is
// refused with the reason that makes the host send the whole log, and
// the whole new log starts a new prefix.
func TestLaunchLogPrefixVoidAfterReset(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "swtpm")
	t.Cleanup(func() { tpm.StopManaged(dir) })
	h := newHost(t, "swtpm:"+dir)
	e := newEnv(t, envOptions{ekAllow: []string{h.nodeID}})
	h.enroll(ctx, e.client)
	guest := newGuestKey(t).PublicKey()
	for range 3 {
		h.launch(testEvent(t, testPolicyName, guest))
	}
	nonce, _ := e.prefixChallenge(t, ctx, h.nodeID)
	wantAllow(t)(e.client.Attest(ctx, h.attestRequest(ctx, nonce, h.lastSandbox())))

	// Reboot: the same TPM, reset.
	h.tpm.Close()
	if err := tpm.StopManaged(dir); err != nil {
		t.Fatal(err)
	}
	tp, err := tpm.Open(ctx, "swtpm:"+dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	h.tpm, h.log = tp, measure.Log{}
	for range 4 { // more records than the old prefix: an offset of 3 "fits"
		h.launch(testEvent(t, testPolicyName, guest))
	}
	nonce, p := e.prefixChallenge(t, ctx, h.nodeID)
	if p.GetEvents() != 3 {
		t.Fatalf("prefix %d events", p.GetEvents())
	}
	_, err = e.client.Attest(ctx, h.incrRequest(ctx, nonce, h.lastSandbox(), 3))
	wantCode(t, err, codes.FailedPrecondition, "reset or restarted", "send the whole launch log")
	if !IsLaunchLogPrefixUnknown(err) {
		t.Fatalf("no ErrorInfo reason on %v", err)
	}
	nonce, _ = e.prefixChallenge(t, ctx, h.nodeID)
	wantAllow(t)(e.client.Attest(ctx, h.attestRequest(ctx, nonce, h.lastSandbox())))
	nonce, p = e.prefixChallenge(t, ctx, h.nodeID)
	if p.GetEvents() != 4 {
		t.Fatalf("prefix after the new boot's whole log: %d events, want 4", p.GetEvents())
	}
	wantAllow(t)(e.client.Attest(ctx, h.incrRequest(ctx, nonce, h.log.Records()[0].Event.SandboxID, 4)))
}
