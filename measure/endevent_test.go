package measure

import (
	"bytes"
	"crypto"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/google/go-eventlog/cel"
)

func testEnd(id, reason string) *EndEvent {
	return &EndEvent{SandboxID: id, Reason: reason, Time: time.Date(2026, 1, 2, 3, 4, 6, 7, time.UTC)}
}

// TestEndEncodingCoversEveryField fails when EndEvent gains a field that
// the canonical encoding does not measure.
func TestEndEncodingCoversEveryField(t *testing.T) {
	var names []string
	rt := reflect.TypeFor[EndEvent]()
	for i := 0; i < rt.NumField(); i++ {
		names = append(names, rt.Field(i).Name)
	}
	if !slices.Equal(names, endFieldNames) {
		t.Fatalf("EndEvent fields %v, canonical encoding covers %v: extend MarshalCanonical, UnmarshalEndEvent, endFieldNames and docs/eventlog.md", names, endFieldNames)
	}
}

func TestEndEventRoundTrip(t *testing.T) {
	for _, reason := range endReasons {
		e := testEnd("sb-1", reason)
		b, err := e.MarshalCanonical()
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalEndEvent(b)
		if err != nil {
			t.Fatalf("%s: %v", reason, err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("round trip: got %+v, want %+v", got, e)
		}
	}
}

func TestEndEventRejects(t *testing.T) {
	good, err := testEnd("sb-1", EndStopped).MarshalCanonical()
	if err != nil {
		t.Fatal(err)
	}
	tlvs := func(fields ...[]byte) []byte { return bytes.Join(fields, nil) }
	ver := appendTLV(nil, endFieldVersion, []byte{1})
	id := appendTLV(nil, endFieldSandboxID, []byte("sb-1"))
	reason := appendTLV(nil, endFieldReason, []byte(EndStopped))
	ts := good[len(good)-17:]
	for _, tc := range []struct {
		name, want string
		b          []byte
	}{
		{"empty", "truncated", nil},
		{"version 2", "unsupported version", tlvs(appendTLV(nil, endFieldVersion, []byte{2}), id, reason, ts)},
		{"version 0", "unsupported version", tlvs(appendTLV(nil, endFieldVersion, []byte{0}), id, reason, ts)},
		{"missing reason", "want field type 0x03", tlvs(ver, id, ts)},
		{"fields swapped", "want field type 0x02", tlvs(ver, reason, id, ts)},
		{"unknown reason", "reason", tlvs(ver, id, appendTLV(nil, endFieldReason, []byte("crashed")), ts)},
		{"reason with NUL", "reason", tlvs(ver, id, appendTLV(nil, endFieldReason, []byte("stopped\x00")), ts)},
		{"empty sandbox id", "sandbox_id is empty", tlvs(ver, appendTLV(nil, endFieldSandboxID, nil), reason, ts)},
		{"bad sandbox id", "only letters", tlvs(ver, appendTLV(nil, endFieldSandboxID, []byte("a/b")), reason, ts)},
		{"long sandbox id", "longer than", tlvs(ver, appendTLV(nil, endFieldSandboxID, bytes.Repeat([]byte("a"), maxSandboxID+1)), reason, ts)},
		{"short time", "want 12 bytes", tlvs(ver, id, reason, appendTLV(nil, endFieldTime, make([]byte, 11)))},
		{"nanoseconds", "out of range", tlvs(ver, id, reason, appendTLV(nil, endFieldTime, append(make([]byte, 8), 0xff, 0xff, 0xff, 0xff)))},
		{"trailing", "trailing bytes", append(slices.Clone(good), appendTLV(nil, 5, nil)...)},
		{"oversized", "more than", make([]byte, maxEndEventSize+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := UnmarshalEndEvent(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

// TestEndRecordChain: an END record is extended into the PCR like a
// launch event (same hash-chain rule), parses back as an END, re-encodes
// to the same bytes, and leaves older logs (launch events only) as they
// were.
func TestEndRecordChain(t *testing.T) {
	l := buildLog(t, 2, SHA256, SHA384)
	before := l.Encode()
	pcr := map[Alg][]byte{SHA256: make([]byte, 32), SHA384: make([]byte, 48)}
	for _, r := range l.Records() {
		for a := range pcr {
			pcr[a] = extendByHand(a.Hash(), pcr[a], r.DigestFor(a))
		}
	}
	var extended []Alg
	rec, err := l.AppendEnd(testEnd("sb-0", EndExited), limits.DefaultLaunchPCR, []Alg{SHA256, SHA384}, func(a Alg, p int, d []byte) error {
		extended = append(extended, a)
		pcr[a] = extendByHand(a.Hash(), pcr[a], d)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(extended) != 2 || rec.RecNum != 2 || !rec.IsEnd() || rec.Event != nil || rec.SandboxID() != "sb-0" {
		t.Fatalf("END record %+v, extended %v", rec, extended)
	}
	if c := rec.Content; c[0] != EndEventContentType {
		t.Fatalf("END content type 0x%02x", c[0])
	}
	enc := l.Encode()
	if !bytes.HasPrefix(enc, before) {
		t.Fatal("appending an END changed the records before it")
	}
	p, err := ParseLog(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.Encode(), enc) {
		t.Fatal("log with an END record re-encodes differently")
	}
	got := p.Records()[2]
	if got.End == nil || got.End.Reason != EndExited || got.Event != nil {
		t.Fatalf("parsed END record: %+v", got)
	}
	for a, want := range pcr {
		v, err := Replay(p, limits.DefaultLaunchPCR, a)
		if err != nil || !bytes.Equal(v, want) {
			t.Fatalf("%s replay %x, %v; extended by hand %x", a, v, err, want)
		}
		vl, err := VerifyLog(enc, limits.DefaultLaunchPCR, a, want)
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := vl.BySandbox("sb-0"); err != nil || ev.SandboxID != "sb-0" {
			t.Fatalf("BySandbox after an END: %v, %v", ev, err)
		}
		if ev, err := vl.Last(); err != nil || ev.SandboxID != "sb-1" {
			t.Fatalf("Last passes over the END record: %v, %v", ev, err)
		}
	}
	// One record alone, and a part of the log from the END on.
	if r, err := ParseRecord(EncodeRecord(&got)); err != nil || !r.IsEnd() {
		t.Fatalf("ParseRecord of an END: %+v, %v", r, err)
	}
	if part, err := ParseLogFrom(l.EncodeFrom(2), 2); err != nil || !part.Records()[0].IsEnd() {
		t.Fatalf("ParseLogFrom at the END: %v", err)
	}
	// go-eventlog verifies its digests with EndContent.
	if err := cel.VerifyDigests(EndContent{got.End}, toCELDigests(got.Digests)); err != nil {
		t.Fatal(err)
	}
}

func toCELDigests(ds []Digest) map[crypto.Hash][]byte {
	m := map[crypto.Hash][]byte{}
	for _, d := range ds {
		m[d.Alg.Hash()] = d.Digest
	}
	return m
}

// TestAppendEndRefuses: the host never writes an END that attestd would
// refuse: one for a sandbox the log did not launch, or a second one.
func TestAppendEndRefuses(t *testing.T) {
	l := buildLog(t, 1)
	if _, err := l.AppendEnd(testEnd("sb-9", EndStopped), limits.DefaultLaunchPCR, nil, nil); err == nil || !strings.Contains(err.Error(), "no launch event") {
		t.Fatalf("END without a launch: %v", err)
	}
	if _, err := l.AppendEnd(testEnd("sb-0", "crashed"), limits.DefaultLaunchPCR, nil, nil); err == nil || !strings.Contains(err.Error(), "reason") {
		t.Fatalf("END with an unknown reason: %v", err)
	}
	if _, err := l.AppendEnd(testEnd("sb-0", EndStopped), limits.DefaultLaunchPCR, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AppendEnd(testEnd("sb-0", EndLost), limits.DefaultLaunchPCR, nil, nil); err == nil || !strings.Contains(err.Error(), "ended already") {
		t.Fatalf("second END: %v", err)
	}
	if l.Len() != 2 {
		t.Fatalf("log has %d records after refused ENDs, want 2", l.Len())
	}
	part, err := ParseLogFrom(l.EncodeFrom(1), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := part.CanEnd("sb-0"); err == nil {
		t.Fatal("a part of a log said it can take an END")
	}
}

// TestParseLogRejectsBadEnd: an END record's content is parsed as
// strictly as a launch event's.
func TestParseLogRejectsBadEnd(t *testing.T) {
	l := buildLog(t, 1)
	if _, err := l.AppendEnd(testEnd("sb-0", EndStopped), limits.DefaultLaunchPCR, nil, nil); err != nil {
		t.Fatal(err)
	}
	good := l.Encode()
	endAt := len(buildLog(t, 1).Encode())
	contentAt := endAt + 61
	for _, tc := range []struct {
		name, want string
		b          []byte
	}{
		{"END reason changed", "does not match", func() []byte {
			b := slices.Clone(good)
			i := bytes.LastIndex(b, []byte(EndStopped))
			copy(b[i:], EndRevoked) // same length: only the digest tells
			return b
		}()},
		{"END as launch type", "launch event", func() []byte {
			b := slices.Clone(good)
			b[contentAt] = LaunchEventContentType
			return b
		}()},
		{"launch as END type", "end event", func() []byte {
			b := slices.Clone(good)
			b[61] = EndEventContentType
			return b
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseLog(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func FuzzUnmarshalEndEvent(f *testing.F) {
	for _, r := range endReasons {
		b, _ := testEnd("00112233445566778899aabbccddeeff", r).MarshalCanonical()
		f.Add(b)
	}
	f.Add([]byte{1, 0, 0, 0, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := UnmarshalEndEvent(b)
		if err != nil {
			return
		}
		again, err := e.MarshalCanonical()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded END does not re-encode to its input: %v", err)
		}
	})
}

// logWithEnd is a seed for the log fuzzers: two launches, an END.
func logWithEnd(t testing.TB) *Log {
	l := buildLog(t, 2, SHA256, SHA384)
	if _, err := l.AppendEnd(testEnd("sb-1", EndRevoked), limits.DefaultLaunchPCR, []Alg{SHA256, SHA384}, nil); err != nil {
		t.Fatal(err)
	}
	return l
}
