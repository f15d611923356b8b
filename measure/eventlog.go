package measure

import (
	"bytes"
	"crypto"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/google/go-eventlog/cel"
)

// The launch event log is a TCG Canonical Event Log (CEL, TLV encoding) whose
// records carry Bulwark launch events and the END events of the sandboxes
// launched; docs/eventlog.md specifies it.
const (
	// LaunchEventContentType is the CEL content type of a Bulwark launch
	// event record. It is not assigned by the TCG; like Confidential Space's
	// COS event type (80), it names our own content.
	LaunchEventContentType uint8 = 0xB1

	// MaxLogSize bounds the encoded launch event records that one
	// ParseLog or ParseLogFrom call accepts: what one attestation request
	// may carry. The host's log file itself is not bounded (ReadLogFile):
	// a host sends attestd only the records after the prefix attestd has
	// verified (docs/eventlog.md "Incremental logs").
	MaxLogSize = 4 << 20

	// MaxRecordSize bounds one encoded record: its launch event content
	// (MaxEventSize) and the record number, PCR and digests around it.
	MaxRecordSize = MaxEventSize + 256

	celTypeRecnum  = 0 // CEL recnum: 8-byte big-endian record number
	celTypePCR     = 1 // CEL pcr: 1-byte PCR index
	celTypeDigests = 3 // CEL digests: nested TLVs keyed by TPM_ALG_ID
)

// LaunchContent adapts a LaunchEvent to go-eventlog's cel.Content, so the
// library's AppendEvent, VerifyDigests and Replay work on our records.
type LaunchContent struct{ Event *LaunchEvent }

var _ cel.Content = LaunchContent{}

// TLV returns the CEL content TLV: type LaunchEventContentType, value the
// canonical encoding of the event.
func (c LaunchContent) TLV() (cel.TLV, error) {
	b, err := c.Event.MarshalCanonical()
	if err != nil {
		return cel.TLV{}, err
	}
	return cel.TLV{Type: LaunchEventContentType, Value: b}, nil
}

// GenerateDigest returns the hash of the whole content TLV (type, length and
// value): the digest that is extended into the PCR.
func (c LaunchContent) GenerateDigest(h crypto.Hash) ([]byte, error) { return contentDigest(c, h) }

// contentDigest is the digest a record's content extends into its PCR:
// the hash of the whole content TLV (type, length and value).
func contentDigest(c cel.Content, h crypto.Hash) ([]byte, error) {
	t, err := c.TLV()
	if err != nil {
		return nil, err
	}
	b, _ := t.MarshalBinary()
	hh := h.New()
	hh.Write(b)
	return hh.Sum(nil), nil
}

// EventContent returns the encoded CEL content TLV of e.
func EventContent(e *LaunchEvent) ([]byte, error) {
	b, err := e.MarshalCanonical()
	if err != nil {
		return nil, err
	}
	return appendTLV(nil, LaunchEventContentType, b), nil
}

// EventDigest returns the digest of e that is extended into the launch PCR
// in the bank of algorithm a: a(content TLV).
func EventDigest(e *LaunchEvent, a Alg) ([]byte, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	c, err := EventContent(e)
	if err != nil {
		return nil, err
	}
	h := a.New()
	h.Write(c)
	return h.Sum(nil), nil
}

// Digest is one bank's digest of a record.
type Digest struct {
	Alg    Alg
	Digest []byte
}

// Record is one record of the log: a launch event, or the END of a
// sandbox launched earlier in the log (exactly one of Event and End is
// set).
type Record struct {
	// RecNum is the record's position in the log, from 0.
	RecNum uint64
	// PCR is the PCR the record's digests were extended into.
	PCR int
	// Digests holds one digest per PCR bank, sorted by TPM_ALG_ID.
	Digests []Digest
	// Event is the decoded launch event; nil for an END record.
	Event *LaunchEvent
	// End is the decoded END event; nil for a launch event.
	End *EndEvent
	// Content is the encoded content TLV the digests are computed over.
	Content []byte
}

// DigestFor returns the record's digest in bank a, or nil.
func (r *Record) DigestFor(a Alg) []byte {
	for _, d := range r.Digests {
		if d.Alg == a {
			return d.Digest
		}
	}
	return nil
}

// Log is a launch event log being built or read back, or a part of one
// (ParseLogFrom): its records are numbered First, First+1, ... A Log is
// not safe for concurrent use.
type Log struct {
	records []Record
	size    int
	first   uint64
}

// First is the record number of the log's first record: 0 for a whole
// log, the offset for a part of one (ParseLogFrom).
func (l *Log) First() uint64 { return l.first }

// Extender extends digest into PCR pcr of the bank of algorithm a (a TPM's
// PCR_Extend, in practice).
type Extender func(a Alg, pcr int, digest []byte) error

// Append records e as the next record of the log, measured in the banks
// algs (at least one; sha256 when none are given), at PCR pcr. When extend
// is not nil it is called for each bank first, and the record is appended
// only if every extend succeeded, as go-eventlog's AppendEvent does.
// The caller persists the log (Encode) after a successful Append.
func (l *Log) Append(e *LaunchEvent, pcr int, algs []Alg, extend Extender) (Record, error) {
	content, err := EventContent(e)
	if err != nil {
		return Record{}, fmt.Errorf("append launch event: %w", err)
	}
	ev := *e // the record keeps its own copy, consistent with Content
	ev.Args = append([]string(nil), e.Args...)
	ev.EnvKeys = append([]string(nil), e.EnvKeys...)
	ev.Ports = append([]string(nil), e.Ports...)
	ev.Volumes = append([]string(nil), e.Volumes...)
	ev.GuestPublicKey = append([]byte(nil), e.GuestPublicKey...)
	return l.appendContent(Record{Event: &ev, Content: content}, pcr, algs, extend)
}

// appendContent measures rec.Content in the banks algs, extends and
// appends rec: Append's steps after the content is encoded.
func (l *Log) appendContent(rec Record, pcr int, algs []Alg, extend Extender) (Record, error) {
	if pcr < 0 || pcr > limits.MaxPCR {
		return Record{}, fmt.Errorf("append record: PCR %d out of range 0..%d", pcr, limits.MaxPCR)
	}
	if len(algs) == 0 {
		algs = []Alg{DefaultAlg}
	}
	content := rec.Content
	rec.RecNum, rec.PCR = l.first+uint64(len(l.records)), pcr
	seen := map[Alg]bool{}
	for _, a := range algs {
		if err := a.check(); err != nil {
			return Record{}, fmt.Errorf("append record: %w", err)
		}
		if seen[a] {
			return Record{}, fmt.Errorf("append record: bank %s given twice", a)
		}
		seen[a] = true
		h := a.New()
		h.Write(content)
		rec.Digests = append(rec.Digests, Digest{Alg: a, Digest: h.Sum(nil)})
	}
	sort.Slice(rec.Digests, func(i, j int) bool { return rec.Digests[i].Alg.TPMAlgID() < rec.Digests[j].Alg.TPMAlgID() })
	n := len(encodeRecord(nil, &rec))
	if extend != nil {
		for _, d := range rec.Digests {
			if err := extend(d.Alg, pcr, d.Digest); err != nil {
				return Record{}, fmt.Errorf("extending PCR %d (%s): %w", pcr, d.Alg, err)
			}
		}
	}
	l.records = append(l.records, rec)
	l.size += n
	return rec, nil
}

// Records returns the log's records in order. The slice is the log's own:
// do not modify it.
func (l *Log) Records() []Record { return l.records }

// Len is the number of records.
func (l *Log) Len() int { return len(l.records) }

func encodeRecord(b []byte, r *Record) []byte {
	var rn [8]byte
	binary.BigEndian.PutUint64(rn[:], r.RecNum)
	b = appendTLV(b, celTypeRecnum, rn[:])
	b = appendTLV(b, celTypePCR, []byte{byte(r.PCR)})
	var ds []byte
	for _, d := range r.Digests {
		ds = appendTLV(ds, byte(d.Alg.TPMAlgID()), d.Digest)
	}
	b = appendTLV(b, celTypeDigests, ds)
	return append(b, r.Content...)
}

// Encode returns the CEL TLV encoding of the whole log.
func (l *Log) Encode() []byte {
	b := make([]byte, 0, l.size)
	for i := range l.records {
		b = encodeRecord(b, &l.records[i])
	}
	return b
}

// EncodeFrom returns the CEL TLV encoding of the log's records from the
// i-th on (i from 0; Len() gives an empty result): the part of a log that
// ParseLogFrom(data, First()+i) reads back.
func (l *Log) EncodeFrom(i int) []byte {
	if i < 0 || i > len(l.records) {
		return nil
	}
	var b []byte
	for j := i; j < len(l.records); j++ {
		b = encodeRecord(b, &l.records[j])
	}
	return b
}

// EncodeRecord returns the CEL TLV encoding of one record, as ParseRecord
// reads it back.
func EncodeRecord(r *Record) []byte { return encodeRecord(nil, r) }

// ParseLog strictly decodes an encoded launch event log from untrusted
// bytes: ParseLogFrom(data, 0).
func ParseLog(data []byte) (*Log, error) { return ParseLogFrom(data, 0) }

// ParseLogFrom strictly decodes, from untrusted bytes, the part of an
// encoded launch event log that starts at record number first (0: the
// whole log). It refuses: more than MaxLogSize bytes; truncated or overlong TLVs;
// record numbers that are not first, first+1, ... in order; register types other
// than PCR and PCR indexes over limits.MaxPCR; a digests field that is empty, names an
// unsupported or repeated algorithm, has a digest of the wrong length, or is
// not sorted by TPM_ALG_ID; a content type other than
// LaunchEventContentType and EndEventContentType; a launch or END event
// that is not in canonical form;
// and any digest that is not the hash of the record's content. Trailing
// bytes are a truncated record and refused too.
func ParseLogFrom(data []byte, first uint64) (*Log, error) {
	if len(data) > MaxLogSize {
		return nil, fmt.Errorf("launch event log: %d bytes, more than %d", len(data), MaxLogSize)
	}
	return parseLog(data, first)
}

// parseLog is ParseLogFrom without the size bound: for the host's own log
// file (ReadLogFile), which grows past what one request may carry.
func parseLog(data []byte, first uint64) (*Log, error) {
	if first > math.MaxUint64/2 {
		return nil, fmt.Errorf("launch event log: first record number %d out of range", first)
	}
	r := &tlvReader{b: data}
	l := &Log{size: len(data), first: first}
	for !r.done() {
		n := first + uint64(len(l.records))
		rec, err := parseRecord(r, n)
		if err != nil {
			return nil, fmt.Errorf("launch event log: record %d: %w", n, err)
		}
		l.records = append(l.records, rec)
	}
	return l, nil
}

// ParseRecord strictly decodes one encoded record (EncodeRecord) from
// untrusted bytes, whatever its record number: every check of ParseLog
// applies, the record must fill data exactly, and data may be at most
// MaxRecordSize bytes.
func ParseRecord(data []byte) (Record, error) {
	if len(data) > MaxRecordSize {
		return Record{}, fmt.Errorf("launch event record: %d bytes, more than %d", len(data), MaxRecordSize)
	}
	v, err := (&tlvReader{b: data}).expect(celTypeRecnum, "recnum")
	if err != nil {
		return Record{}, fmt.Errorf("launch event record: %w", err)
	}
	if len(v) != 8 {
		return Record{}, fmt.Errorf("launch event record: recnum: want 8 bytes, got %d", len(v))
	}
	r := &tlvReader{b: data}
	rec, err := parseRecord(r, binary.BigEndian.Uint64(v))
	if err != nil {
		return Record{}, fmt.Errorf("launch event record: %w", err)
	}
	if !r.done() {
		return Record{}, fmt.Errorf("launch event record: %d trailing bytes", len(data)-r.off)
	}
	return rec, nil
}

func parseRecord(r *tlvReader, want uint64) (Record, error) {
	var rec Record
	v, err := r.expect(celTypeRecnum, "recnum")
	if err != nil {
		return rec, err
	}
	if len(v) != 8 {
		return rec, fmt.Errorf("recnum: want 8 bytes, got %d", len(v))
	}
	if rec.RecNum = binary.BigEndian.Uint64(v); rec.RecNum != want {
		return rec, fmt.Errorf("recnum %d out of sequence (want %d)", rec.RecNum, want)
	}
	typ, v, err := r.next()
	if err != nil {
		return rec, fmt.Errorf("register index: %w", err)
	}
	if typ != celTypePCR {
		return rec, fmt.Errorf("register index: type %d is not a PCR (%d)", typ, celTypePCR)
	}
	if len(v) != 1 || v[0] > limits.MaxPCR {
		return rec, fmt.Errorf("register index: invalid PCR index %x", v)
	}
	rec.PCR = int(v[0])
	v, err = r.expect(celTypeDigests, "digests")
	if err != nil {
		return rec, err
	}
	dr := &tlvReader{b: v}
	for !dr.done() {
		t, d, err := dr.next()
		if err != nil {
			return rec, fmt.Errorf("digests: %w", err)
		}
		a, ok := algFromTPM(uint16(t))
		if !ok {
			return rec, fmt.Errorf("digests: unsupported algorithm 0x%02x", t)
		}
		if len(d) != a.Size() {
			return rec, fmt.Errorf("digests: %s digest is %d bytes, want %d", a, len(d), a.Size())
		}
		if n := len(rec.Digests); n > 0 && rec.Digests[n-1].Alg.TPMAlgID() >= a.TPMAlgID() {
			return rec, errors.New("digests: algorithms repeated or not sorted by TPM_ALG_ID")
		}
		rec.Digests = append(rec.Digests, Digest{Alg: a, Digest: d})
	}
	if len(rec.Digests) == 0 {
		return rec, errors.New("digests: none")
	}
	start := r.off
	typ, v, err = r.next()
	if err != nil {
		return rec, fmt.Errorf("content: %w", err)
	}
	rec.Content = r.b[start:r.off:r.off]
	switch typ {
	case LaunchEventContentType:
		if rec.Event, err = UnmarshalLaunchEvent(v); err != nil {
			return rec, err
		}
	case EndEventContentType:
		if rec.End, err = UnmarshalEndEvent(v); err != nil {
			return rec, err
		}
	default:
		return rec, fmt.Errorf("content: unknown content type 0x%02x (want launch event 0x%02x or END 0x%02x)", typ, LaunchEventContentType, EndEventContentType)
	}
	for _, d := range rec.Digests {
		h := d.Alg.New()
		h.Write(rec.Content)
		if !bytes.Equal(h.Sum(nil), d.Digest) {
			return rec, fmt.Errorf("%s digest does not match the event content", d.Alg)
		}
	}
	return rec, nil
}

// Replay computes the value PCR pcr of bank a would hold after extending,
// from all zeros, the a-digest of every record of l for that PCR, in order:
// PCR = a(PCR || digest). A record for pcr without an a-digest is an error.
func Replay(l *Log, pcr int, a Alg) ([]byte, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	v := make([]byte, a.Size())
	for i := range l.records {
		rec := &l.records[i]
		if rec.PCR != pcr {
			continue
		}
		d := rec.DigestFor(a)
		if d == nil {
			return nil, fmt.Errorf("replay: record %d has no %s digest", rec.RecNum, a)
		}
		h := a.New()
		h.Write(v)
		h.Write(d)
		v = h.Sum(v[:0])
	}
	return v, nil
}

// ReplaySteps extends, from start (all zeros when nil), the a-digest of
// each of recs in order, PCR = a(PCR || digest), and returns the value
// after each record: steps[i] is the PCR after recs[i]. The records' PCR
// index is not looked at (the caller checks it). A record without an
// a-digest is an error.
func ReplaySteps(recs []Record, a Alg, start []byte) ([][]byte, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	if start == nil {
		start = make([]byte, a.Size())
	}
	if len(start) != a.Size() {
		return nil, fmt.Errorf("replay: start value is %d bytes, want %d for %s", len(start), a.Size(), a)
	}
	steps := make([][]byte, len(recs))
	v := start
	for i := range recs {
		d := recs[i].DigestFor(a)
		if d == nil {
			return nil, fmt.Errorf("replay: record %d has no %s digest", recs[i].RecNum, a)
		}
		h := a.New()
		h.Write(v)
		h.Write(d)
		v = h.Sum(nil)
		steps[i] = v
	}
	return steps, nil
}

// Errors of VerifyLogFrom (and VerifyLog), for callers that branch on
// which way a log failed.
var (
	// ErrMalformedLog: the log's bytes do not parse strictly (ParseLogFrom).
	ErrMalformedLog = errors.New("malformed launch event log")
	// ErrLogReplay: the log parsed but is not what the TPM measured: a
	// record for another PCR, a record without a digest of the bank, or a
	// replay that does not give the quoted PCR value.
	ErrLogReplay = errors.New("launch event log does not replay to the quoted PCR")
)

// logError is an error of class ErrMalformedLog or ErrLogReplay whose
// message is its detail alone (the caller names the log).
type logError struct {
	class error
	err   error
}

func (e *logError) Error() string   { return e.err.Error() }
func (e *logError) Unwrap() []error { return []error{e.class, e.err} }
func logErrorf(class error, format string, a ...any) error {
	return &logError{class: class, err: fmt.Errorf(format, a...)}
}

// VerifiedLog is a launch event log (or the part of one from a record
// number on) that parsed strictly and replayed to a quoted PCR value. It
// exists only as the result of VerifyLog or VerifyLogFrom: its fields are
// unexported, so no code can build one by hand. Callers must not modify
// what its accessors return.
type VerifiedLog struct {
	pcr     int
	alg     Alg
	first   uint64
	start   []byte
	records []Record
	steps   [][]byte
}

// PCR is the PCR the log's records were replayed into.
func (v *VerifiedLog) PCR() int { return v.pcr }

// Alg is the bank the log was replayed in.
func (v *VerifiedLog) Alg() Alg { return v.alg }

// First is the number of the log's first record (0: the whole log).
func (v *VerifiedLog) First() uint64 { return v.first }

// Records are the verified records, from First on.
func (v *VerifiedLog) Records() []Record { return v.records }

// Start is the PCR value the replay started from (all zeros for a whole
// log).
func (v *VerifiedLog) Start() []byte { return v.start }

// Steps are the PCR values the replay went through: Steps()[i] is the
// value after Records()[i].
func (v *VerifiedLog) Steps() [][]byte { return v.steps }

// Value is the PCR value the log replays to: the quoted value.
func (v *VerifiedLog) Value() []byte {
	if len(v.steps) == 0 {
		return v.start
	}
	return v.steps[len(v.steps)-1]
}

// VerifyLog parses an untrusted log (see ParseLog for every check), requires
// every record to be for PCR pcr, replays bank a and compares the result
// with pcrValue, the value the TPM quoted. Only when all of that holds does
// it return the events. VerifyLog is VerifyLogFrom(data, 0, pcr, a, nil,
// pcrValue).
func VerifyLog(data []byte, pcr int, a Alg, pcrValue []byte) (*VerifiedLog, error) {
	return VerifyLogFrom(data, 0, pcr, a, nil, pcrValue)
}

// VerifyLogFrom verifies the part of a launch log that starts at record
// number first: it parses data strictly (ParseLogFrom; ErrMalformedLog
// when it does not), requires every record to be for PCR pcr, replays bank
// a from start — the PCR value after the first `first` records, which the
// caller verified before; all zeros when nil — and compares the result
// with pcrValue, the value the TPM quoted (ErrLogReplay when any of that
// fails). An empty part replays to start.
func VerifyLogFrom(data []byte, first uint64, pcr int, a Alg, start, pcrValue []byte) (*VerifiedLog, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	if len(pcrValue) != a.Size() {
		return nil, fmt.Errorf("verify launch log: quoted PCR value is %d bytes, want %d for %s", len(pcrValue), a.Size(), a)
	}
	if start == nil {
		start = make([]byte, a.Size())
	}
	l, err := ParseLogFrom(data, first)
	if err != nil {
		return nil, &logError{class: ErrMalformedLog, err: err}
	}
	for _, rec := range l.records {
		if rec.PCR != pcr {
			return nil, logErrorf(ErrLogReplay, "record %d is for PCR %d, not the launch PCR %d", rec.RecNum, rec.PCR, pcr)
		}
	}
	steps, err := ReplaySteps(l.records, a, start)
	if err != nil {
		return nil, &logError{class: ErrLogReplay, err: err}
	}
	v := &VerifiedLog{pcr: pcr, alg: a, first: first, start: start, records: l.records, steps: steps}
	if got := v.Value(); subtle.ConstantTimeCompare(got, pcrValue) != 1 {
		from := ""
		if first > 0 {
			from = fmt.Sprintf(" from record %d (after the verified prefix's PCR value %x)", first, start)
		}
		return nil, logErrorf(ErrLogReplay, "replay of %d events%s gives PCR %d = %x, the quote says %x (log edited or incomplete)",
			len(l.records), from, pcr, got, pcrValue)
	}
	return v, nil
}

// Last returns the last launch event of the log: the newest launch on the
// host (END records are passed over). (attestd judges the requested
// sandbox's event wherever it stands.)
func (v *VerifiedLog) Last() (*LaunchEvent, error) {
	for i := len(v.records) - 1; i >= 0; i-- {
		if v.records[i].Event != nil {
			return v.records[i].Event, nil
		}
	}
	return nil, errors.New("launch event log has no launch event")
}

// BySandbox returns the last launch event for sandbox id.
func (v *VerifiedLog) BySandbox(id string) (*LaunchEvent, error) {
	for i := len(v.records) - 1; i >= 0; i-- {
		if e := v.records[i].Event; e != nil && e.SandboxID == id {
			return e, nil
		}
	}
	return nil, fmt.Errorf("no launch event for sandbox %q in the log", truncate(id))
}
