// Package evidence verifies a Bulwark host's attestation evidence — a TPM
// quote by the node's AK, the launch event log it covers (docs/eventlog.md)
// and the host's firmware event log — from plain Go values: it speaks no
// protocol and keeps no state. attestd adapts its gRPC requests and its
// store to it; a third party can verify the same evidence with it alone.
package evidence

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
	"github.com/google/go-attestation/attest"
)

// The inputs as Bulwark's AttestRequest names them: an *Error's Field.
const (
	fieldPCRs          = "pcrs"
	fieldQuote         = "quote"
	fieldLogOffset     = "launch_log_offset"
	fieldLaunchLog     = "launch_log"
	fieldSandboxID     = "sandbox_id"
	fieldSandboxRecord = "sandbox_record"
	fieldFirmwareLog   = "firmware_event_log"
)

// Quote is a TPM quote and what it is checked against.
type Quote struct {
	// AKPublic is the node's AK (TPMT_PUBLIC or TPM2B_PUBLIC): the key
	// the verifier trusts for this node.
	AKPublic []byte
	// Quoted is the TPMS_ATTEST the TPM signed, Signature its
	// TPMT_SIGNATURE.
	Quoted, Signature []byte
	// Nonce is the nonce the verifier issued for this quote.
	Nonce []byte
	// PCRs are the SHA-256 PCR values the host says the quote covers.
	PCRs map[int][]byte
	// LaunchPCR is the PCR launch events are extended into
	// (limits.DefaultLaunchPCR unless configured otherwise); it must be
	// among PCRs.
	LaunchPCR int
}

// Input is the evidence of one attestation: a quote, the launch log it
// covers, the sandbox to judge, and optionally the host's firmware log.
type Input struct {
	Quote
	// LaunchLog is the encoded launch log (measure.Log): the whole log
	// when LaunchLogOffset is 0, else its records from that record number
	// on — those after a prefix the verifier verified before (Held).
	LaunchLog       []byte
	LaunchLogOffset uint64
	// SandboxID is the sandbox judged: the log must launch it exactly
	// once and not end it. Empty when no one sandbox is judged (a host
	// re-attesting several: the caller looks each up in Records).
	SandboxID string
	// SandboxRecord is the encoded record of SandboxID's launch event
	// when that record is before LaunchLogOffset (measure.EncodeRecord);
	// it must be the record Held names. Empty otherwise.
	SandboxRecord []byte
	// FirmwareLog is the host's TCG firmware event log; empty for none.
	FirmwareLog []byte
	// Held is the prefix of the node's launch log the verifier verified
	// and kept before; nil for none.
	Held *Prefix
}

// Prefix is what a verifier keeps of a node's launch log after verifying
// it, to verify only the records after it next time (docs/eventlog.md
// "Incremental logs"): its first Events records replayed, from zero, to
// PCR, in the TPM boot cycle named by ResetCount and RestartCount.
type Prefix struct {
	ResetCount, RestartCount uint32
	Events                   uint64
	PCR                      []byte
	// PCRAt is the launch PCR value after the first LaunchLogOffset
	// records: all zeros for 0, PCR for Events, nil past Events.
	PCRAt []byte
	// Records returns the prefix's records of a sandbox, in order: its
	// launch event and, once it ended, its END record (none: nil, nil).
	// Verify asks for Input.SandboxID and for the sandboxes the END
	// records after the offset name; an error is returned as is, wrapped.
	Records func(sandboxID string) ([]PrefixRecord, error)
}

// PrefixRecord is what a verifier keeps of one verified launch log record.
type PrefixRecord struct {
	RecNum    uint64
	SandboxID string
	Digest    []byte // SHA-256 of the record's content: what was extended
	PCR       []byte // the launch PCR value after this record
	End       bool   // an END record, not a launch event
}

// SameBoot reports whether a quote with these counters was taken in the
// prefix's TPM boot cycle: no reset (reboot) or restart since, so the
// launch PCR still extends from PCR. The counters are compared for
// equality only (the TPM obfuscates them for keys outside the endorsement
// hierarchy).
func (p *Prefix) SameBoot(c verify.ClockInfo) bool {
	return p.ResetCount == c.ResetCount && p.RestartCount == c.RestartCount
}

func (p *Prefix) records(id string) ([]PrefixRecord, error) {
	if p.Records == nil {
		return nil, nil
	}
	recs, err := p.Records(id)
	if err != nil {
		return nil, fmt.Errorf("launch log prefix: %w", err)
	}
	return recs, nil
}

// Verified is the evidence after every check of Verify passed. Only Verify
// makes one: its fields are unexported and every value in it comes from a
// verified result (the quote, the replayed logs). Callers must not modify
// what its accessors return. Safe for concurrent reads.
type Verified struct {
	quote       *verify.QuoteResult
	launchPCR   int
	log         *measure.VerifiedLog
	event       *measure.LaunchEvent
	eventDigest []byte
	firmware    []attest.Event
	update      *PrefixUpdate
}

// Quote is the verified quote.
func (v *Verified) Quote() *verify.QuoteResult { return v.quote }

// Clock is the quote's clock information: its ResetCount and
// RestartCount name the TPM boot cycle.
func (v *Verified) Clock() verify.ClockInfo { return v.quote.Clock() }

// LaunchPCR is the launch PCR's index.
func (v *Verified) LaunchPCR() int { return v.launchPCR }

// LaunchPCRValue is the quoted launch PCR value.
func (v *Verified) LaunchPCRValue() []byte {
	b, _ := v.quote.PCR(v.launchPCR)
	return b
}

// HostPCRs are the quoted SHA-256 PCR values other than the launch PCR,
// by index: those the quote's digest covers, copied from the verified
// quote.
func (v *Verified) HostPCRs() map[int][]byte {
	m := v.quote.PCRs()
	delete(m, v.launchPCR)
	return m
}

// Records are the launch log records the input carried, verified: the
// whole log, or the records from LogOffset on.
func (v *Verified) Records() []measure.Record { return v.log.Records() }

// LogOffset is the number of the first record in Records.
func (v *Verified) LogOffset() uint64 { return v.log.First() }

// Event is the requested sandbox's launch event: from the log, or the
// held prefix's record the input sent (SandboxRecord). Nil when no
// sandbox was requested.
func (v *Verified) Event() *measure.LaunchEvent { return v.event }

// EventDigest is the SHA-256 digest of Event's record (what was extended).
func (v *Verified) EventDigest() []byte { return v.eventDigest }

// FirmwareEvents are the replayed firmware log's events; nil when no
// firmware log was sent.
func (v *Verified) FirmwareEvents() []attest.Event { return v.firmware }

// PrefixUpdate is what a verifier keeps after a verification: the prefix
// of the node's launch log this quote verified (its NodeID-less form of
// the stored prefix) and its records from the held prefix's last on.
type PrefixUpdate struct {
	ResetCount, RestartCount uint32
	Clock                    uint64 // the TPM's clock, kept for the record
	Events                   uint64
	PCR                      []byte
	Records                  []PrefixRecord
}

// PrefixUpdate returns the prefix to keep, when the verified log goes past
// the held prefix or starts a new TPM boot cycle; false when there is
// nothing new to keep.
func (v *Verified) PrefixUpdate() (PrefixUpdate, bool) {
	if v.update == nil {
		return PrefixUpdate{}, false
	}
	return *v.update, true
}

// VerifyQuote checks a quote and that the launch PCR is among its PCRs
// (CheckInput, CheckQuote): the checks an attestation shares with a
// node's proof of itself when it watches for decisions.
func VerifyQuote(q Quote) (*verify.QuoteResult, error) {
	if err := limits.CheckLaunchPCR(q.LaunchPCR); err != nil {
		return nil, invalidf(CheckInput, fieldPCRs, "%v", err)
	}
	if _, ok := q.PCRs[q.LaunchPCR]; !ok {
		return nil, invalidf(CheckInput, fieldPCRs, "the launch PCR %d is not among the quoted PCRs", q.LaunchPCR)
	}
	r, err := verify.VerifyQuote(q.AKPublic, q.Quoted, q.Signature, q.Nonce, q.PCRs)
	if err != nil {
		return nil, refuse(CheckQuote, fieldQuote, err)
	}
	return r, nil
}

// Verify runs every check of an attestation's evidence, in this order, and
// returns the verified state only when all pass; a refusal is an *Error
// naming the check and the input:
//
//  1. the launch PCR is in range and among the PCRs (CheckInput);
//  2. the quote (CheckQuote, tpm/verify.VerifyQuote): a TPMT_SIGNATURE by
//     the AK over the TPMS_ATTEST, magic TPM_GENERATED_VALUE and type
//     ATTEST_QUOTE, extraData equal to the nonce, the PCR selection equal
//     to the PCRs given (SHA-256 bank) and the PCR digest equal to the
//     digest of their values. From here on every PCR value used is the
//     verified quote's;
//  3. an incremental log (LaunchLogOffset > 0) starts where the held
//     prefix reaches, in the quote's TPM boot cycle (CheckPrefix: else
//     the host sends the whole log);
//  4. the launch log parses strictly (Invalid) and replays to the quoted
//     launch PCR (CheckLaunchLog, measure.VerifyLogFrom): from zero for a
//     whole log, else from the held prefix's value at the offset; where
//     the replay passes the end of the held prefix it gives the held
//     value (within one boot cycle a TPM's launch PCR has one history);
//     and the log holds at least one record;
//  5. every END record names a sandbox launched earlier in the same log
//     (before the offset, the held prefix says), once (CheckEnds);
//  6. when SandboxID is set, the log holds exactly one launch event for
//     it, anywhere, and no END for it (CheckSandbox): before the offset,
//     the held prefix's records count, and the event is SandboxRecord,
//     which must be the held record (same number and digest);
//  7. a firmware log, when given, parses and replays to the quoted host
//     PCRs, and the data of every event whose digest covers its data
//     hashes to that digest (CheckFirmwareLog, ReplayFirmwareLog).
//
// An error from Held.Records is returned wrapped, not as an *Error.
func Verify(in Input) (*Verified, error) {
	q, err := VerifyQuote(in.Quote)
	if err != nil {
		return nil, err
	}
	clock := q.Clock()
	launchValue, _ := q.PCR(in.LaunchPCR)
	offset := in.LaunchLogOffset
	start, err := replayStart(offset, clock, in.Held)
	if err != nil {
		return nil, err
	}
	lg, err := measure.VerifyLogFrom(in.LaunchLog, offset, in.LaunchPCR, measure.SHA256, start, launchValue)
	switch {
	case errors.Is(err, measure.ErrMalformedLog):
		return nil, &Error{Check: CheckLaunchLog, Field: fieldLaunchLog, Invalid: true, Err: err}
	case err != nil:
		return nil, refuse(CheckLaunchLog, fieldLaunchLog, err)
	}
	recs, steps := lg.Records(), lg.Steps()
	end := offset + uint64(len(recs))
	if end == 0 {
		return nil, refusef(CheckLaunchLog, fieldLaunchLog, "no launch events")
	}
	held := in.Held
	sameBoot := held != nil && held.SameBoot(clock)
	if n := heldEvents(held); sameBoot && n > offset && end >= n {
		if got := steps[n-1-offset]; subtle.ConstantTimeCompare(got, held.PCR) != 1 {
			return nil, refusef(CheckLaunchLog, fieldLaunchLog, "replay gives PCR %d = %x after record %d, but attestd verified %x there in this TPM boot cycle (a log that disagrees with an earlier quote of the same TPM)",
				in.LaunchPCR, got, n-1, held.PCR)
		}
	}
	if err := checkEnds(recs, offset, held, clock); err != nil {
		return nil, err
	}
	v := &Verified{quote: q, launchPCR: in.LaunchPCR, log: lg}
	if in.SandboxID != "" {
		var stored []PrefixRecord
		if sameBoot {
			if stored, err = held.records(in.SandboxID); err != nil {
				return nil, err
			}
		}
		if v.event, v.eventDigest, err = sandboxEvent(in, recs, stored); err != nil {
			return nil, err
		}
	}
	if len(in.FirmwareLog) > 0 {
		if v.firmware, err = ReplayFirmwareLog(in.FirmwareLog, v.HostPCRs()); err != nil {
			return nil, err
		}
	}
	// What to keep: the log as far as this quote, when it goes past the
	// held prefix (or starts a new boot cycle's), with the records from
	// the held prefix's last on (the keeper checks they agree).
	if n := heldEvents(held); len(recs) > 0 && (!sameBoot || end > n) {
		from := uint64(0)
		if sameBoot && n > offset+1 {
			from = n - 1 - offset
		}
		u := &PrefixUpdate{ResetCount: clock.ResetCount, RestartCount: clock.RestartCount, Clock: clock.Clock, Events: end, PCR: bytes.Clone(lg.Value())}
		for i := from; i < uint64(len(recs)); i++ {
			u.Records = append(u.Records, PrefixRecord{RecNum: recs[i].RecNum, SandboxID: recs[i].SandboxID(),
				Digest: recs[i].DigestFor(measure.SHA256), PCR: steps[i], End: recs[i].IsEnd()})
		}
		v.update = u
	}
	return v, nil
}

// heldEvents is how many records the held prefix has (0: none).
func heldEvents(held *Prefix) uint64 {
	if held == nil {
		return 0
	}
	return held.Events
}

// replayStart is where check 4 replays an incremental log from: the PCR
// value held after offset records, in the quote's TPM boot cycle. nil
// (all zeros) for a whole log.
func replayStart(offset uint64, clock verify.ClockInfo, held *Prefix) ([]byte, error) {
	if offset == 0 {
		return nil, nil
	}
	switch {
	case held == nil:
		return nil, prefixUnknown("attestd holds no verified launch log for this node")
	case !held.SameBoot(clock):
		return nil, prefixUnknown("the TPM was reset or restarted (a reboot) since attestd verified this node's launch log")
	case held.PCRAt == nil:
		return nil, prefixUnknown("%d is past the %d records attestd has verified", offset, held.Events)
	}
	return held.PCRAt, nil
}

func prefixUnknown(format string, a ...any) *Error {
	return refusef(CheckPrefix, fieldLogOffset, format+": send the whole launch log (launch_log_offset 0)", a...)
}

// checkEnds is check 5: each END record of recs (the records from offset
// on) ends a sandbox launched before it in the same log — in recs, or in
// the held prefix before offset — and not ended yet. An END never counts
// as a launch.
func checkEnds(recs []measure.Record, offset uint64, held *Prefix, clock verify.ClockInfo) error {
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
			return refusef(CheckEnds, fieldLaunchLog, "record %d is a second END record for sandbox %q (the first is record %d): a sandbox ends once", r.RecNum, id, at)
		}
		if !launched[id] && offset > 0 && held != nil && held.SameBoot(clock) {
			before, err := held.records(id)
			if err != nil {
				return err
			}
			for _, p := range before {
				switch {
				case p.RecNum >= offset:
				case p.End:
					return refusef(CheckEnds, fieldLaunchLog, "record %d is a second END record for sandbox %q (the first is record %d): a sandbox ends once", r.RecNum, id, p.RecNum)
				default:
					launched[id] = true
				}
			}
		}
		if !launched[id] {
			return refusef(CheckEnds, fieldLaunchLog, "record %d is an END record for sandbox %q, which the log does not launch before it: an END ends a sandbox launched earlier in the same log (since the TPM's last reset)", r.RecNum, id)
		}
		ended[id] = r.RecNum
	}
	return nil
}

// sandboxEvent is check 6: the one launch event of the requested sandbox,
// wherever it stands in the log (other sandboxes launched or ended on the
// host since do not change this one). A sandbox id is launched once: two
// launch events for it are refused as ambiguous (its END record does not
// count). A sandbox whose END record is in the log has ended: it is
// refused, never judged alive. recs are the records the input carried,
// from offset on; stored are the held prefix's records for the sandbox
// (those before offset count; the others are among recs), and the event
// of one of those is the input's SandboxRecord.
func sandboxEvent(in Input, recs []measure.Record, stored []PrefixRecord) (*measure.LaunchEvent, []byte, error) {
	id, offset := in.SandboxID, in.LaunchLogOffset
	var ev *measure.LaunchEvent
	var evDigest []byte
	var before *PrefixRecord
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
		return nil, nil, refusef(CheckSandbox, fieldSandboxID, "the launch log has no event for sandbox %q (%d records for other sandboxes)", id, offset+uint64(len(recs)))
	case n > 1:
		return nil, nil, refusef(CheckSandbox, fieldSandboxID, "the launch log has %d events for sandbox %q (its END record aside); a sandbox id is launched once", n, id)
	case end != "":
		return nil, nil, refusef(CheckSandbox, fieldSandboxID, "sandbox %q has ended: %s is in the verified launch log; an ended sandbox is never judged alive", id, end)
	case before == nil:
		if len(in.SandboxRecord) > 0 {
			return nil, nil, invalidf(CheckSandbox, fieldSandboxRecord, "sent, but sandbox %q's event is in launch_log: send it only for an event before launch_log_offset", id)
		}
		return ev, evDigest, nil
	}
	if len(in.SandboxRecord) == 0 {
		return nil, nil, invalidf(CheckSandbox, fieldSandboxRecord, "missing: sandbox %q's launch event is record %d, before launch_log_offset %d: send that record", id, before.RecNum, offset)
	}
	rec, err := measure.ParseRecord(in.SandboxRecord)
	if err != nil {
		return nil, nil, invalidf(CheckSandbox, fieldSandboxRecord, "%v", err)
	}
	d := rec.DigestFor(measure.SHA256)
	if rec.RecNum != before.RecNum || rec.PCR != in.LaunchPCR || d == nil || subtle.ConstantTimeCompare(d, before.Digest) != 1 || rec.Event == nil || rec.Event.SandboxID != id {
		return nil, nil, refusef(CheckSandbox, fieldSandboxRecord, "record %d is not the record %d of sandbox %q that attestd verified (digest %x)",
			rec.RecNum, before.RecNum, id, before.Digest)
	}
	return rec.Event, d, nil
}
