package attestd

import (
	"bytes"
	"context"
	"crypto"
	_ "crypto/sha1" // for firmware event logs' SHA-1 digests
	_ "crypto/sha256"
	_ "crypto/sha512" // SHA-384
	"crypto/subtle"
	"errors"
	"fmt"
	"sort"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm/verify"
	"github.com/google/go-attestation/attest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Verified is the state of an attestation request after every
// cryptographic check passed. It exists only as the result of
// VerifyAttestation; policy judges it next.
type Verified struct {
	Node store.Node
	// Event is the judged launch event: the one event of the replayed
	// launch log whose sandbox id is the one requested (nil for a
	// re-attestation of several sandboxes: sandbox_ids).
	Event *measure.LaunchEvent
	// EventDigest is the SHA-256 digest of Event's record.
	EventDigest []byte
	// ResetCount and RestartCount name the quote's TPM boot cycle.
	ResetCount, RestartCount uint32
	// Records are the launch event records the request carried and that
	// replayed: the whole log, or the records from LogOffset on (after the
	// prefix attestd had verified before).
	Records   []measure.Record
	LogOffset uint64
	// LaunchPCR and LaunchPCRValue are the quoted launch PCR.
	LaunchPCR      uint32
	LaunchPCRValue []byte
	// HostPCRs are the other quoted SHA-256 PCRs (index → value).
	HostPCRs map[int][]byte
	// FirmwareEvents is the replayed firmware event log, nil when none was
	// sent.
	FirmwareEvents []attest.Event
	Time           time.Time

	// advance is the launch log prefix this request verified, to store
	// (with advanceRecs, its records) when it goes past the stored one;
	// nil when it does not.
	advance     *store.LaunchPrefix
	advanceRecs []store.PrefixRecord
}

// VerifyAttestation runs every check on an Attest request that does not
// depend on policy, in this order, and returns the verified state only
// when all pass:
//
//  1. the request is well formed (every field present, sized and shaped;
//     InvalidArgument naming the field otherwise);
//  2. the node is enrolled (NotFound) and its AK activated
//     (FailedPrecondition; PermissionDenied when revoked);
//  3. the nonce was issued to this node, is unexpired, and is consumed
//     now, atomically (a replay, an expired or a foreign nonce is
//     PermissionDenied);
//  4. the quote: TPMT_SIGNATURE by the node's AK over the TPMS_ATTEST,
//     magic TPM_GENERATED_VALUE and type ATTEST_QUOTE, extraData equal to
//     the nonce, the PCR selection equal to the PCRs sent (SHA-256 bank,
//     the launch PCR among them) and the PCR digest equal to the digest of
//     their values (PermissionDenied "quote: ...");
//  5. the launch log parses strictly (InvalidArgument "launch_log: ...")
//     and replays to the quoted launch PCR (PermissionDenied): from zero
//     when it is the whole log; from the PCR value attestd stored at
//     launch_log_offset when it starts there — which needs a verified
//     prefix of the node's log reaching the offset, from the quote's TPM
//     boot cycle (same reset and restart counts), else FailedPrecondition
//     with reason LAUNCH_LOG_PREFIX_UNKNOWN: the host sends the whole log.
//     Where the replay passes the end of the stored prefix it must give
//     the stored PCR value (PermissionDenied otherwise: within one boot
//     cycle a TPM's launch PCR has one history);
//  6. every END record names a sandbox launched earlier in the same log,
//     once (PermissionDenied "launch_log: ..."; before the offset, the
//     stored prefix says); the log holds exactly one launch event for the
//     requested sandbox, anywhere in it, and no END for it
//     (PermissionDenied "sandbox_id: ..."; an ended sandbox is never
//     judged alive): launches and ends of other sandboxes on the host,
//     before or after, do not change this one. Before the offset,
//     attestd counts the stored prefix's records of that sandbox, and the
//     event is the sandbox_record the host sent, which must be the stored
//     record (same number and digest);
//  7. a firmware event log, when sent, parses and replays to the quoted
//     host PCRs (0-7, and 8-9 — the boot loader's — when the launcher
//     quoted them), and the data of every event whose digest covers its
//     data (the UEFI variable events, which say whether Secure Boot is on;
//     grub's strings in PCR 8, the kernel command line among them) hashes
//     to that digest (go-attestation; PermissionDenied
//     "firmware_event_log: ...").
func (s *Server) VerifyAttestation(ctx context.Context, req *bulwarkv1.AttestRequest) (*Verified, error) {
	v, _, err := s.verifyAttestation(ctx, req)
	return v, err
}

// verifyAttestation is VerifyAttestation, and says whether the quote
// verified (check 4 passed) before a later check refused: only then has
// the caller proven something a stranger cannot (a fresh quote by the
// node's AK over the nonce), and only then is a refusal audited.
func (s *Server) verifyAttestation(ctx context.Context, req *bulwarkv1.AttestRequest) (v *Verified, quoted bool, err error) {
	if err := validateAttest(req); err != nil {
		return nil, false, err
	}
	if _, ok := req.GetPcrs()[s.launchPCR]; !ok {
		return nil, false, invalid("pcrs", "the launch PCR %d is not among the quoted PCRs", s.launchPCR)
	}
	node, err := s.st.GetNode(ctx, req.GetNodeId())
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, status.Error(codes.NotFound, "node_id: not enrolled (call Enroll)")
	}
	if err != nil {
		return nil, false, s.storeStatus(ctx, "attest", err)
	}
	if err := nodeActive(node); err != nil {
		return nil, false, err
	}
	now := s.now()
	if err := s.st.ConsumeNonce(ctx, req.GetNonce(), node.ID, now); err != nil {
		return nil, false, s.storeStatus(ctx, "attest", err)
	}
	clock, err := checkQuote(node.AKPublic, s.launchPCR, req)
	if err != nil {
		return nil, false, err
	}
	var held *store.PrefixView
	hv, err := s.st.ReadLaunchPrefix(ctx, node.ID, req.GetLaunchLogOffset(), req.GetSandboxId())
	switch {
	case err == nil:
		held = &hv
	case !errors.Is(err, store.ErrNotFound):
		return nil, true, s.storeStatus(ctx, "attest", err)
	}
	// Before the offset, the stored prefix says which sandboxes an END
	// record of the request may end (checkEnds).
	prior := func(id string) ([]store.PrefixRecord, error) {
		pv, err := s.st.ReadLaunchPrefix(ctx, node.ID, req.GetLaunchLogOffset(), id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return nil, nil
		case err != nil:
			return nil, s.storeStatus(ctx, "attest: launch log prefix", err)
		case !pv.Prefix.SameBoot(clock.ResetCount, clock.RestartCount):
			return nil, nil // replaced meanwhile by a new boot cycle's
		}
		return pv.Sandbox, nil
	}
	if v, err = checkQuoted(s.launchPCR, req, clock, held, prior); err != nil {
		return nil, true, err
	}
	v.Node, v.Time = node, now
	if v.advance != nil {
		v.advance.NodeID = node.ID
		// The prefix is attestd's memory, not part of the verdict: losing
		// a race to another attestation of the node (ErrConflict) leaves
		// the next request to send a little more.
		if _, err := s.st.AdvanceLaunchPrefix(ctx, *v.advance, v.advanceRecs); err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, true, s.storeStatus(ctx, "attest: launch log prefix", err)
		} else if err != nil {
			s.log.DebugContext(ctx, "launch log prefix not advanced", "node", node.ID, "error", err)
		}
	}
	return v, true, nil
}

// verifyEvidence is the part of VerifyAttestation that needs no state but
// the node's AK, the launch PCR and the launch log prefix attestd holds
// (nil: none): checks 4 to 7 on a request already validated. It is
// deterministic, which is what FuzzAttestRequest drives.
func verifyEvidence(akPublic []byte, launchPCR uint32, req *bulwarkv1.AttestRequest, held *store.PrefixView) (*Verified, error) {
	clock, err := checkQuote(akPublic, launchPCR, req)
	if err != nil {
		return nil, err
	}
	prior := func(id string) ([]store.PrefixRecord, error) {
		if held != nil && id == req.GetSandboxId() {
			return held.Sandbox, nil
		}
		return nil, nil
	}
	return checkQuoted(launchPCR, req, clock, held, prior)
}

// checkQuote is check 4: the quote is signed by the AK, over the nonce
// and the PCR values sent, the launch PCR among them. It returns the
// quote's clock information.
func checkQuote(akPublic []byte, launchPCR uint32, req *bulwarkv1.AttestRequest) (verify.ClockInfo, error) {
	if _, ok := req.GetPcrs()[launchPCR]; !ok {
		return verify.ClockInfo{}, invalid("pcrs", "the launch PCR %d is not among the quoted PCRs", launchPCR)
	}
	r, err := verify.VerifyQuote(akPublic, req.GetQuote(), req.GetSignature(), req.GetNonce(), pcrsByIndex(req.GetPcrs()))
	if err != nil {
		return verify.ClockInfo{}, status.Errorf(codes.PermissionDenied, "quote: %v", err)
	}
	return r.Clock, nil
}

// pcrsByIndex is the request's PCR map keyed as verify.VerifyQuote takes it.
func pcrsByIndex(pcrs map[uint32][]byte) map[int][]byte {
	m := make(map[int][]byte, len(pcrs))
	for i, v := range pcrs {
		m[int(i)] = v
	}
	return m
}

// prefixUnknown is the refusal of a request whose launch_log_offset
// attestd cannot replay from: the host sends its whole log instead.
func prefixUnknown(format string, a ...any) error {
	st := status.Newf(codes.FailedPrecondition, "launch_log_offset: "+format+": send the whole launch log (launch_log_offset 0)", a...)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: bulwarkv1.ReasonLaunchLogPrefixUnknown, Domain: bulwarkv1.ErrorDomain}); err == nil {
		st = d
	}
	return st.Err()
}

// IsLaunchLogPrefixUnknown reports whether err is attestd's refusal of an
// incremental launch log: bulwarkv1.IsLaunchLogPrefixUnknown.
func IsLaunchLogPrefixUnknown(err error) bool { return bulwarkv1.IsLaunchLogPrefixUnknown(err) }

// heldEvents is how many records the stored prefix holds (0: none).
func heldEvents(held *store.PrefixView) uint64 {
	if held == nil {
		return 0
	}
	return held.Prefix.Events
}

// replayStart is where check 5 replays an incremental log from: the PCR
// value attestd stored after launch_log_offset records, in the quote's
// TPM boot cycle. nil (all zeros) for a whole log.
func replayStart(offset uint64, clock verify.ClockInfo, held *store.PrefixView) ([]byte, error) {
	if offset == 0 {
		return nil, nil
	}
	switch {
	case held == nil:
		return nil, prefixUnknown("attestd holds no verified launch log for this node")
	case !held.Prefix.SameBoot(clock.ResetCount, clock.RestartCount):
		return nil, prefixUnknown("the TPM was reset or restarted (a reboot) since attestd verified this node's launch log")
	case held.PCRAt == nil:
		return nil, prefixUnknown("%d is past the %d records attestd has verified", offset, held.Prefix.Events)
	}
	return held.PCRAt, nil
}

// priorRecords returns the stored prefix's records of a sandbox (launch
// event and END), in the quote's boot cycle; none when attestd holds none.
type priorRecords func(id string) ([]store.PrefixRecord, error)

// checkEnds is the first part of check 6: each END record of recs (the
// records from offset on) ends a sandbox launched before it in the same
// log — in recs, or in the stored prefix before offset (prior) — and not
// ended yet. An END never counts as a launch.
func checkEnds(recs []measure.Record, offset uint64, prior priorRecords) error {
	launched := map[string]bool{}
	ended := map[string]uint64{}
	for i := range recs {
		r := &recs[i]
		id := r.SandboxID()
		if !r.IsEnd() {
			launched[id] = true
			continue
		}
		if at, dup := ended[id]; dup {
			return status.Errorf(codes.PermissionDenied, "launch_log: record %d is a second END record for sandbox %q (the first is record %d): a sandbox ends once", r.RecNum, id, at)
		}
		if !launched[id] && offset > 0 {
			before, err := prior(id)
			if err != nil {
				return err
			}
			for _, p := range before {
				switch {
				case p.RecNum >= offset:
				case p.End:
					return status.Errorf(codes.PermissionDenied, "launch_log: record %d is a second END record for sandbox %q (the first is record %d): a sandbox ends once", r.RecNum, id, p.RecNum)
				default:
					launched[id] = true
				}
			}
		}
		if !launched[id] {
			return status.Errorf(codes.PermissionDenied, "launch_log: record %d is an END record for sandbox %q, which the log does not launch before it: an END ends a sandbox launched earlier in the same log (since the TPM's last reset)", r.RecNum, id)
		}
		ended[id] = r.RecNum
	}
	return nil
}

// sandboxEvent is the rest of check 6: the one launch event of the
// requested sandbox, wherever it stands in the log (other sandboxes
// launched or ended on the host since do not change this one). A sandbox
// id is launched once: two launch events for it are refused as
// ambiguous (its END record does not count). A sandbox whose END record
// is in the log has ended: it is refused, never judged alive. recs are
// the records the request carried, from offset on; stored are the
// verified prefix's records for the sandbox (those before offset count;
// the others are among recs), and the event of one of those is the
// request's sandbox_record.
func sandboxEvent(req *bulwarkv1.AttestRequest, launchPCR uint32, recs []measure.Record, offset uint64, stored []store.PrefixRecord) (*measure.LaunchEvent, []byte, error) {
	id := req.GetSandboxId()
	var ev *measure.LaunchEvent
	var evDigest []byte
	var before *store.PrefixRecord
	var end string // the END record's description, when the sandbox ended
	n := 0
	for i := range stored {
		switch {
		case stored[i].RecNum >= offset:
		case stored[i].End:
			end = fmt.Sprintf("its END record %d", stored[i].RecNum)
		default:
			before = &stored[i]
			n++
		}
	}
	for i := range recs {
		r := &recs[i]
		switch {
		case r.SandboxID() != id:
		case r.IsEnd():
			end = fmt.Sprintf("its END record %d (%s)", r.RecNum, r.End.Reason)
		default:
			ev, evDigest = r.Event, r.DigestFor(measure.SHA256)
			n++
		}
	}
	switch {
	case n == 0:
		return nil, nil, status.Errorf(codes.PermissionDenied, "sandbox_id: the launch log has no event for sandbox %q (%d records for other sandboxes)", id, offset+uint64(len(recs)))
	case n > 1:
		return nil, nil, status.Errorf(codes.PermissionDenied, "sandbox_id: the launch log has %d events for sandbox %q (its END record aside); a sandbox id is launched once", n, id)
	case end != "":
		return nil, nil, status.Errorf(codes.PermissionDenied, "sandbox_id: sandbox %q has ended: %s is in the verified launch log; an ended sandbox is never judged alive", id, end)
	case before == nil:
		if len(req.GetSandboxRecord()) > 0 {
			return nil, nil, invalid("sandbox_record", "sent, but sandbox %q's event is in launch_log: send it only for an event before launch_log_offset", id)
		}
		return ev, evDigest, nil
	}
	if len(req.GetSandboxRecord()) == 0 {
		return nil, nil, invalid("sandbox_record", "missing: sandbox %q's launch event is record %d, before launch_log_offset %d: send that record", id, before.RecNum, offset)
	}
	rec, err := measure.ParseRecord(req.GetSandboxRecord())
	if err != nil {
		return nil, nil, invalid("sandbox_record", "%v", err)
	}
	d := rec.DigestFor(measure.SHA256)
	if rec.RecNum != before.RecNum || rec.PCR != int(launchPCR) || d == nil || subtle.ConstantTimeCompare(d, before.Digest) != 1 || rec.Event == nil || rec.Event.SandboxID != id {
		return nil, nil, status.Errorf(codes.PermissionDenied, "sandbox_record: record %d is not the record %d of sandbox %q that attestd verified (digest %x)",
			rec.RecNum, before.RecNum, id, before.Digest)
	}
	return rec.Event, d, nil
}

// checkQuoted is checks 5 to 7, on a request whose quote checkQuote
// verified (clock is the quote's): the PCR values are those the TPM
// quoted. held is the node's stored launch log prefix, nil if none.
func checkQuoted(launchPCR uint32, req *bulwarkv1.AttestRequest, clock verify.ClockInfo, held *store.PrefixView, prior priorRecords) (*Verified, error) {
	launchValue := req.GetPcrs()[launchPCR]
	offset := req.GetLaunchLogOffset()
	start, err := replayStart(offset, clock, held)
	if err != nil {
		return nil, err
	}
	lg, err := measure.ParseLogFrom(req.GetLaunchLog(), offset)
	if err != nil {
		return nil, invalid("launch_log", "%v", err)
	}
	recs := lg.Records()
	for i := range recs {
		if recs[i].PCR != int(launchPCR) {
			return nil, status.Errorf(codes.PermissionDenied, "launch_log: record %d is for PCR %d, not the launch PCR %d", recs[i].RecNum, recs[i].PCR, launchPCR)
		}
	}
	steps, err := measure.ReplaySteps(recs, measure.SHA256, start)
	if err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "launch_log: %v", err)
	}
	replayed := start
	if len(steps) > 0 {
		replayed = steps[len(steps)-1]
	} else if replayed == nil {
		replayed = make([]byte, len(launchValue))
	}
	if subtle.ConstantTimeCompare(replayed, launchValue) != 1 {
		from := ""
		if offset > 0 {
			from = fmt.Sprintf(" from record %d (after the verified prefix's PCR value %x)", offset, start)
		}
		return nil, status.Errorf(codes.PermissionDenied, "launch_log: replay of %d events%s gives PCR %d = %x, the quote says %x (log edited or incomplete)",
			len(recs), from, launchPCR, replayed, launchValue)
	}
	end := offset + uint64(len(recs))
	if end == 0 {
		return nil, status.Error(codes.PermissionDenied, "launch_log: no launch events")
	}
	// Within one TPM boot cycle the launch PCR has one history: a log that
	// passes the end of the verified prefix must pass through its value.
	sameBoot := held != nil && held.Prefix.SameBoot(clock.ResetCount, clock.RestartCount)
	if n := heldEvents(held); sameBoot && n > offset && end >= n {
		if got := steps[n-1-offset]; subtle.ConstantTimeCompare(got, held.Prefix.PCR) != 1 {
			return nil, status.Errorf(codes.PermissionDenied, "launch_log: replay gives PCR %d = %x after record %d, but attestd verified %x there in this TPM boot cycle (a log that disagrees with an earlier quote of the same TPM)",
				launchPCR, got, n-1, held.Prefix.PCR)
		}
	}
	if err := checkEnds(recs, offset, prior); err != nil {
		return nil, err
	}
	var (
		ev       *measure.LaunchEvent
		evDigest []byte
	)
	// A re-attestation (sandbox_ids) finds each sandbox's event in the
	// verified log after this check (reattest.go).
	if !isReattest(req) {
		var stored []store.PrefixRecord
		if sameBoot {
			stored = held.Sandbox
		}
		if ev, evDigest, err = sandboxEvent(req, launchPCR, recs, offset, stored); err != nil {
			return nil, err
		}
	}

	v := &Verified{
		Event: ev, EventDigest: evDigest, ResetCount: clock.ResetCount, RestartCount: clock.RestartCount, Records: recs, LogOffset: offset, LaunchPCR: launchPCR, LaunchPCRValue: launchValue,
		HostPCRs: make(map[int][]byte, len(req.GetPcrs())-1),
	}
	for idx, val := range req.GetPcrs() {
		if idx != launchPCR {
			v.HostPCRs[int(idx)] = val
		}
	}
	if fw := req.GetFirmwareEventLog(); len(fw) > 0 {
		var err error
		if v.FirmwareEvents, err = replayFirmwareLog(fw, v.HostPCRs); err != nil {
			return nil, err
		}
	}
	// What to remember: the log as far as this quote, when it goes past
	// the stored prefix (or starts a new boot cycle's), with the records
	// from the stored prefix's last on (the store checks they agree).
	if n := heldEvents(held); len(recs) > 0 && (!sameBoot || end > n) {
		from := uint64(0)
		if sameBoot && n > offset+1 {
			from = n - 1 - offset
		}
		v.advance = &store.LaunchPrefix{ResetCount: clock.ResetCount, RestartCount: clock.RestartCount, Clock: clock.Clock, Events: end, PCR: replayed}
		for i := from; i < uint64(len(recs)); i++ {
			v.advanceRecs = append(v.advanceRecs, store.PrefixRecord{RecNum: recs[i].RecNum, SandboxID: recs[i].SandboxID(),
				Digest: recs[i].DigestFor(measure.SHA256), PCR: steps[i], End: recs[i].IsEnd()})
		}
	}
	return v, nil
}

// replayFirmwareLog parses a TCG firmware event log and replays it against
// the quoted (hence verified) host PCRs.
func replayFirmwareLog(b []byte, pcrs map[int][]byte) (evs []attest.Event, err error) {
	defer func() {
		if r := recover(); r != nil { // third-party parser of untrusted bytes
			evs, err = nil, invalid("firmware_event_log", "does not parse")
		}
	}()
	el, err := attest.ParseEventLog(b)
	if err != nil {
		return nil, invalid("firmware_event_log", "%v", err)
	}
	idx := make([]int, 0, len(pcrs))
	for i := range pcrs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	list := make([]attest.PCR, 0, len(idx))
	for _, i := range idx {
		list = append(list, attest.PCR{Index: i, Digest: pcrs[i], DigestAlg: crypto.SHA256})
	}
	evs, err = el.Verify(list)
	if err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "firmware_event_log: does not replay to the quoted PCRs: %v", err)
	}
	if err := checkEventData(evs); err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "firmware_event_log: %v", err)
	}
	return evs, nil
}

// Event types whose digest, by the TCG PC Client Platform Firmware
// Profile, is the digest of the event's data itself. Replay verifies only
// digests; for these the data is what a reader acts on (the UEFI
// variables SecureBoot, PK, KEK, db, dbx; the separators; the authorities
// that verified a boot image), so it must hash to the verified digest.
var digestOfData = map[attest.EventType]string{
	0x00000004: "EV_SEPARATOR",
	0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
	0x80000006: "EV_EFI_GPT_EVENT",
	0x800000e0: "EV_EFI_VARIABLE_AUTHORITY",
}

// checkEventData refuses a replayed log in which an event whose digest
// covers its data carries data that does not hash to it: the digest
// replayed, the data was changed (a SecureBoot variable that reads 0 in a
// log whose quoted PCR 7 says otherwise).
func checkEventData(evs []attest.Event) error {
	for i := range evs {
		e := &evs[i]
		name, ok := digestOfData[e.Type]
		if !ok {
			continue
		}
		if dataMatches(e.Digest, e.Data) {
			continue
		}
		// Shims before rhboot/shim 8a27a48 measure one extra byte into
		// EV_EFI_VARIABLE_AUTHORITY's data (go-attestation issue 157, which
		// ParseSecurebootState accepts the same way).
		if name == "EV_EFI_VARIABLE_AUTHORITY" && len(e.Data) > 0 && dataMatches(e.Digest, e.Data[:len(e.Data)-1]) {
			continue
		}
		return fmt.Errorf("event %d (%s, PCR %d): its data does not hash to its replayed digest (the data was changed)", i, name, e.Index)
	}
	for i := range evs {
		e := &evs[i]
		text, _, ok := grubString(e)
		if !ok {
			continue
		}
		// grub measures the text after its prefix, with or without the
		// NUL that ends it (go-eventlog's GrubStateFromTPMLog alike).
		if dataMatches(e.Digest, text) || len(text) > 0 && text[len(text)-1] == 0 && dataMatches(e.Digest, text[:len(text)-1]) {
			continue
		}
		return fmt.Errorf("event %d (EV_IPL, PCR %d, %q): its text does not hash to its replayed digest (the data was changed)", i, e.Index, trunc(string(e.Data)))
	}
	return nil
}

// evIPL is EV_IPL, the event type boot loaders measure their strings and
// files with.
const evIPL = 0x0000000d

// grubPrefixes start the strings grub measures into PCR 8 (the GRUB
// manual's "Measured Boot", and the older prefixes of distributions' TPM
// patches); the digest is over the text after the prefix.
var grubPrefixes = []string{"grub_cmd: ", "kernel_cmdline: ", "module_cmdline: ", "grub_kernel_cmdline ", "grub_cmd "}

// grubString splits a PCR 8 EV_IPL event that grub measured into its
// prefix and the text the digest covers; ok is false for any other event.
func grubString(e *attest.Event) (text []byte, prefix string, ok bool) {
	if e.Index != 8 || uint32(e.Type) != evIPL {
		return nil, "", false
	}
	for _, p := range grubPrefixes {
		if t, found := bytes.CutPrefix(e.Data, []byte(p)); found {
			return t, p, true
		}
	}
	return nil, "", false
}

// dataMatches says whether data hashes to digest, whose length says the
// algorithm (SHA-256, SHA-384 or SHA-1).
func dataMatches(digest, data []byte) bool {
	var h crypto.Hash
	switch len(digest) {
	case crypto.SHA256.Size():
		h = crypto.SHA256
	case crypto.SHA384.Size():
		h = crypto.SHA384
	case crypto.SHA1.Size():
		h = crypto.SHA1
	default:
		return false
	}
	w := h.New()
	w.Write(data)
	return subtle.ConstantTimeCompare(w.Sum(nil), digest) == 1
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
