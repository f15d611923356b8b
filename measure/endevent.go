package measure

import (
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-eventlog/cel"
)

// EndEventContentType is the CEL content type of a Bulwark sandbox END
// record: the host writes one into the launch log when a sandbox that it
// launched (a LaunchEvent) ends, for whatever reason, and extends it into
// the launch PCR like a launch event. Like LaunchEventContentType it is
// Bulwark's own, not assigned by the TCG.
const EndEventContentType uint8 = 0xB2

// The reasons a sandbox ends (EndEvent.Reason).
const (
	// EndExited: the workload exited by itself.
	EndExited = "exited"
	// EndStopped: an operator (launcher stop, rm --force, Ctrl-C) or the
	// host service's shutdown stopped it.
	EndStopped = "stopped"
	// EndRevoked: the host stopped it on attestd's revocation.
	EndRevoked = "revoked"
	// EndLost: its QEMU ended while nothing watched it (the host service
	// was down), or it could not be taken over.
	EndLost = "lost"
	// EndFailed: its launch failed after the launch event was recorded
	// (attestation denied, secrets not released, the workload did not
	// start), or the VM failed.
	EndFailed = "failed"
)

var endReasons = []string{EndExited, EndStopped, EndRevoked, EndLost, EndFailed}

// EndEvent records that a sandbox ended. A sandbox whose END record is in
// a host's verified launch log is never judged alive again (attestd).
type EndEvent struct {
	// SandboxID is the id of the launch event this ends.
	SandboxID string `json:"sandbox_id"`
	// Reason is one of EndExited, EndStopped, EndRevoked, EndLost,
	// EndFailed.
	Reason string `json:"reason"`
	// Time is when the host recorded the end (UTC).
	Time time.Time `json:"time"`
}

// The canonical encoding of an EndEvent (docs/eventlog.md "END records"):
// field TLVs, each exactly once, in this order.
const (
	endFieldVersion   = 0x01 // 1 byte: endEventVersion1
	endFieldSandboxID = 0x02 // as LaunchEvent.SandboxID
	endFieldReason    = 0x03 // one of endReasons
	endFieldTime      = 0x04 // as LaunchEvent.Time

	endEventVersion1 = 1
)

// endFieldNames lists the EndEvent fields the encoding covers (a test
// fails when EndEvent gains one that is not listed).
var endFieldNames = []string{"SandboxID", "Reason", "Time"}

// Validate checks that e can be encoded canonically: the sandbox id as a
// launch event's, a known reason, a time in years 1..9999.
func (e *EndEvent) Validate() error {
	if err := checkSandboxID(e.SandboxID); err != nil {
		return fmt.Errorf("end event: %w", err)
	}
	known := false
	for _, r := range endReasons {
		known = known || e.Reason == r
	}
	if !known {
		return fmt.Errorf("end event: reason %q: want one of %q", truncate(e.Reason), endReasons)
	}
	if y := e.Time.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("end event: time: year %d outside 1..9999", y)
	}
	return nil
}

// checkSandboxID checks a sandbox id, in a launch event and an END record.
func checkSandboxID(id string) error {
	if id == "" {
		return errors.New("sandbox_id is empty")
	}
	if len(id) > maxSandboxID {
		return fmt.Errorf("sandbox_id longer than %d bytes", maxSandboxID)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("sandbox_id %q: only letters, digits, '-', '_' and '.' are allowed", truncate(id))
		}
	}
	return nil
}

// MarshalCanonical returns the canonical encoding of e (the value of the
// END content TLV). Time is encoded in UTC at nanosecond precision.
func (e *EndEvent) MarshalCanonical() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	var b []byte
	b = appendTLV(b, endFieldVersion, []byte{endEventVersion1})
	b = appendTLV(b, endFieldSandboxID, []byte(e.SandboxID))
	b = appendTLV(b, endFieldReason, []byte(e.Reason))
	var ts [12]byte
	binary.BigEndian.PutUint64(ts[:8], uint64(e.Time.Unix()))
	binary.BigEndian.PutUint32(ts[8:], uint32(e.Time.Nanosecond()))
	return appendTLV(b, endFieldTime, ts[:]), nil
}

// maxEndEventSize bounds an encoded END content value: every field at its
// largest.
const maxEndEventSize = 4*tlvHeader + 1 + maxSandboxID + 16 + 12

// UnmarshalEndEvent strictly decodes the canonical encoding produced by
// MarshalCanonical: every field exactly once and in order, a known
// version, no trailing bytes, a valid event that re-encodes to the same
// bytes.
func UnmarshalEndEvent(b []byte) (*EndEvent, error) {
	if len(b) > maxEndEventSize {
		return nil, fmt.Errorf("end event: %d bytes, more than %d", len(b), maxEndEventSize)
	}
	r := &tlvReader{b: b}
	v, err := r.expect(endFieldVersion, "version")
	if err != nil {
		return nil, fmt.Errorf("end event: %w", err)
	}
	if len(v) != 1 || v[0] != endEventVersion1 {
		return nil, fmt.Errorf("end event: unsupported version %x (want %d)", v, endEventVersion1)
	}
	var e EndEvent
	for _, s := range []struct {
		typ  byte
		name string
		dst  *string
	}{
		{endFieldSandboxID, "sandbox_id", &e.SandboxID},
		{endFieldReason, "reason", &e.Reason},
	} {
		v, err := r.expect(s.typ, s.name)
		if err != nil {
			return nil, fmt.Errorf("end event: %w", err)
		}
		*s.dst = string(v)
	}
	if v, err = r.expect(endFieldTime, "time"); err != nil {
		return nil, fmt.Errorf("end event: %w", err)
	}
	if len(v) != 12 {
		return nil, fmt.Errorf("end event: time: want 12 bytes, got %d", len(v))
	}
	nsec := binary.BigEndian.Uint32(v[8:])
	if nsec >= 1e9 {
		return nil, fmt.Errorf("end event: time: nanoseconds %d out of range", nsec)
	}
	e.Time = time.Unix(int64(binary.BigEndian.Uint64(v[:8])), int64(nsec)).UTC()
	if !r.done() {
		return nil, fmt.Errorf("end event: %d trailing bytes after the last field", len(b)-r.off)
	}
	again, err := e.MarshalCanonical()
	if err != nil {
		return nil, err
	}
	if string(again) != string(b) {
		return nil, errors.New("end event: not in canonical form")
	}
	return &e, nil
}

// EndContent adapts an EndEvent to go-eventlog's cel.Content.
type EndContent struct{ Event *EndEvent }

var _ cel.Content = EndContent{}

// TLV returns the CEL content TLV: type EndEventContentType, value the
// canonical encoding of the event.
func (c EndContent) TLV() (cel.TLV, error) {
	b, err := c.Event.MarshalCanonical()
	if err != nil {
		return cel.TLV{}, err
	}
	return cel.TLV{Type: EndEventContentType, Value: b}, nil
}

// GenerateDigest returns the hash of the whole content TLV, the digest
// extended into the PCR.
func (c EndContent) GenerateDigest(h crypto.Hash) ([]byte, error) { return contentDigest(c, h) }

// EndContentTLV returns the encoded CEL content TLV of e.
func EndContentTLV(e *EndEvent) ([]byte, error) {
	b, err := e.MarshalCanonical()
	if err != nil {
		return nil, err
	}
	return appendTLV(nil, EndEventContentType, b), nil
}

// AppendEnd records e, the end of a sandbox, as the next record of the
// log, as Append does for a launch event (same banks, PCR and extend
// rules). It refuses an END for a sandbox id the log has no launch event
// for, or that has ended already: attestd refuses such a log.
func (l *Log) AppendEnd(e *EndEvent, pcr int, algs []Alg, extend Extender) (Record, error) {
	if err := l.CanEnd(e.SandboxID); err != nil {
		return Record{}, fmt.Errorf("append end event: %w", err)
	}
	content, err := EndContentTLV(e)
	if err != nil {
		return Record{}, fmt.Errorf("append end event: %w", err)
	}
	ev := *e
	return l.appendContent(Record{End: &ev, Content: content}, pcr, algs, extend)
}

// CanEnd says why an END record for sandbox id cannot follow the log's
// records (nil if it can): the log must hold its launch event, and no END
// for it yet. A part of a log (First() > 0) cannot tell.
func (l *Log) CanEnd(id string) error {
	launched, ended := false, false
	for i := range l.records {
		switch r := &l.records[i]; {
		case r.Event != nil && r.Event.SandboxID == id:
			launched = true
		case r.End != nil && r.End.SandboxID == id:
			ended = true
		}
	}
	switch {
	case l.first > 0:
		return fmt.Errorf("sandbox %q: a part of a log cannot tell whether it was launched", truncate(id))
	case !launched:
		return fmt.Errorf("sandbox %q has no launch event in the log", truncate(id))
	case ended:
		return fmt.Errorf("sandbox %q has ended already", truncate(id))
	}
	return nil
}

// SandboxID is the sandbox the record names: its launch event's, or the
// END record's.
func (r *Record) SandboxID() string {
	if r.End != nil {
		return r.End.SandboxID
	}
	if r.Event != nil {
		return r.Event.SandboxID
	}
	return ""
}

// IsEnd reports whether the record is an END record.
func (r *Record) IsEnd() bool { return r.End != nil }
