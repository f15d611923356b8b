package measure

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/tpm/limits"
)

// bigEvent is a launch event of about 60 KiB (its command override is
// long), so that a few dozen make a log past MaxLogSize.
func bigEvent(id string) *LaunchEvent {
	e := testEvent(id)
	e.Args = []string{strings.Repeat("a", 4000)}
	for range 14 {
		e.Args = append(e.Args, strings.Repeat("b", 4000))
	}
	return e
}

// TestHostLogGrowsPastRequestLimit: the host's log file is not capped at
// MaxLogSize (it was: Append refused past 4 MiB, and ReadLogFile refused
// such a file); only what one parse of untrusted bytes takes is, and the
// part after a prefix parses on its own and replays from the prefix's PCR
// value to the whole log's.
func TestHostLogGrowsPastRequestLimit(t *testing.T) {
	l := &Log{}
	for i := 0; l.size <= MaxLogSize+MaxRecordSize; i++ {
		if _, err := l.Append(bigEvent(fmt.Sprintf("sb-%d", i)), limits.DefaultLaunchPCR, nil, nil); err != nil {
			t.Fatalf("append %d (log %d bytes): %v", i, l.size, err)
		}
	}
	path := filepath.Join(t.TempDir(), "launch.cel")
	whole := l.Encode()
	if err := os.WriteFile(path, whole, 0o644); err != nil {
		t.Fatal(err)
	}
	back, err := ReadLogFile(path)
	if err != nil {
		t.Fatalf("reading a %d-byte log file: %v", len(whole), err)
	}
	if back.Len() != l.Len() {
		t.Fatalf("read back %d records, want %d", back.Len(), l.Len())
	}
	if _, err := ParseLog(whole); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("ParseLog of %d bytes: %v, want refused", len(whole), err)
	}

	full, err := Replay(l, limits.DefaultLaunchPCR, SHA256)
	if err != nil {
		t.Fatal(err)
	}
	k := l.Len() - 3
	steps, err := ReplaySteps(l.Records()[:k], SHA256, nil)
	if err != nil {
		t.Fatal(err)
	}
	tail, err := ParseLogFrom(l.EncodeFrom(k), uint64(k))
	if err != nil {
		t.Fatalf("tail: %v", err)
	}
	if tail.First() != uint64(k) || tail.Len() != 3 || tail.Records()[0].RecNum != uint64(k) {
		t.Fatalf("tail: first %d, %d records, first recnum %d", tail.First(), tail.Len(), tail.Records()[0].RecNum)
	}
	got, err := ReplaySteps(tail.Records(), SHA256, steps[k-1])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[len(got)-1], full) {
		t.Fatalf("tail replayed from the prefix gives %x, the whole log %x", got[len(got)-1], full)
	}
	// Appending to a part keeps numbering from its first record.
	rec, err := tail.Append(testEvent("next"), limits.DefaultLaunchPCR, nil, nil)
	if err != nil || rec.RecNum != uint64(l.Len()) {
		t.Fatalf("append to a part: recnum %d, %v; want %d", rec.RecNum, err, l.Len())
	}
}

func TestParseLogFromAndRecord(t *testing.T) {
	l := buildLog(t, 4)
	tail := l.EncodeFrom(2)
	one := EncodeRecord(&l.Records()[1])
	for _, tc := range []struct {
		name, want string
		parse      func() error
	}{
		{"tail at its offset", "", func() error { _, err := ParseLogFrom(tail, 2); return err }},
		{"tail numbered from 0", "out of sequence", func() error { _, err := ParseLogFrom(tail, 0); return err }},
		{"tail one off", "out of sequence", func() error { _, err := ParseLogFrom(tail, 3); return err }},
		{"empty tail", "", func() error { _, err := ParseLogFrom(l.EncodeFrom(4), 4); return err }},
		{"record", "", func() error {
			r, err := ParseRecord(one)
			if err == nil && (r.RecNum != 1 || r.Event.SandboxID != "sb-1") {
				return fmt.Errorf("parsed record %d for %s", r.RecNum, r.Event.SandboxID)
			}
			return err
		}},
		{"record with trailing bytes", "trailing", func() error { _, err := ParseRecord(append(one, 0)); return err }},
		{"two records", "trailing", func() error { _, err := ParseRecord(tail); return err }},
		{"empty record", "recnum", func() error { _, err := ParseRecord(nil); return err }},
		{"truncated record", "content", func() error { _, err := ParseRecord(one[:len(one)-1]); return err }},
		{"oversized record", "more than", func() error { _, err := ParseRecord(make([]byte, MaxRecordSize+1)); return err }},
		{"record with a changed event", "does not match", func() error {
			b := bytes.Clone(one)
			i := bytes.Index(b, []byte("sb-1"))
			b[i+3] = '9'
			_, err := ParseRecord(b)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.parse()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := ReplaySteps(l.Records(), SHA256, make([]byte, 31)); err == nil {
		t.Fatal("ReplaySteps took a 31-byte start value")
	}
}

func FuzzParseLogFrom(f *testing.F) {
	l := buildLog(f, 3)
	f.Add(l.EncodeFrom(1), uint64(1))
	f.Add(l.EncodeFrom(0), uint64(0))
	f.Add([]byte{}, uint64(7))
	f.Add(logWithEnd(f).EncodeFrom(2), uint64(2))
	f.Fuzz(func(t *testing.T, b []byte, first uint64) {
		p, err := ParseLogFrom(b, first)
		if err != nil {
			return
		}
		if !bytes.Equal(p.EncodeFrom(0), b) {
			t.Fatalf("parsed part re-encodes differently")
		}
		for i, r := range p.Records() {
			if r.RecNum != first+uint64(i) {
				t.Fatalf("record %d numbered %d", i, r.RecNum)
			}
		}
		ReplaySteps(p.Records(), SHA256, nil)
	})
}

func FuzzParseRecord(f *testing.F) {
	l := buildLog(f, 2, SHA256, SHA384)
	f.Add(EncodeRecord(&l.Records()[1]))
	f.Add(EncodeRecord(&logWithEnd(f).Records()[2]))
	f.Add([]byte{0, 0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRecord(b)
		if err != nil {
			return
		}
		if !bytes.Equal(EncodeRecord(&r), b) {
			t.Fatalf("parsed record re-encodes differently")
		}
	})
}
