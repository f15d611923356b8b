package hostd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type record struct {
	stream byte
	data   string
}

func collect(t *testing.T, l *outputLog, follow bool) []record {
	t.Helper()
	var got []record
	if err := l.follow(context.Background(), follow, func(st byte, d []byte) error {
		got = append(got, record{st, string(d)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestOutputLogKeepsOrderAndStreams(t *testing.T) {
	l, err := createOutputLog(filepath.Join(t.TempDir(), "out"), DefaultLogLimit)
	if err != nil {
		t.Fatal(err)
	}
	l.writer(streamStdout).Write([]byte("one\n"))
	l.writer(streamStderr).Write([]byte("two\n"))
	big := strings.Repeat("x", maxRecord+10) // split into two records
	l.writer(streamStdout).Write([]byte(big))
	l.end()
	got := collect(t, l, true) // the log ended: follow returns
	want := []record{{1, "one\n"}, {2, "two\n"}, {1, big[:maxRecord]}, {1, big[maxRecord:]}}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d: stream %d, %d bytes; want stream %d, %d bytes", i, got[i].stream, len(got[i].data), want[i].stream, len(want[i].data))
		}
	}
	// A log read back after a restart is the same.
	if again := collect(t, endedOutputLog(l.path), false); len(again) != len(want) {
		t.Errorf("read back: %d records, want %d", len(again), len(want))
	}
}

func TestOutputLogFollowSeesLaterWrites(t *testing.T) {
	l, err := createOutputLog(filepath.Join(t.TempDir(), "out"), DefaultLogLimit)
	if err != nil {
		t.Fatal(err)
	}
	l.writer(streamStdout).Write([]byte("first"))
	got := make(chan record, 10)
	done := make(chan error, 1)
	go func() {
		done <- l.follow(context.Background(), true, func(st byte, d []byte) error {
			got <- record{st, string(d)}
			return nil
		})
	}()
	if r := <-got; r.data != "first" {
		t.Fatalf("first record %q", r.data)
	}
	l.writer(streamStderr).Write([]byte("second"))
	if r := <-got; r != (record{2, "second"}) {
		t.Fatalf("second record %+v", r)
	}
	l.end()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestOutputLogFollowEndsWithContext(t *testing.T) {
	l, err := createOutputLog(filepath.Join(t.TempDir(), "out"), DefaultLogLimit)
	if err != nil {
		t.Fatal(err)
	}
	defer l.end()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.follow(ctx, true, func(byte, []byte) error { return nil }); err == nil {
		t.Fatal("follow of a running log did not end with its context")
	}
}

func TestOutputLogLimit(t *testing.T) {
	l, err := createOutputLog(filepath.Join(t.TempDir(), "out"), 4096)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, err := l.writer(streamStdout).Write(bytes.Repeat([]byte("y"), 100)); err != nil {
			t.Fatal(err)
		}
	}
	l.end()
	st, err := os.Stat(l.path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 4096+200 {
		t.Errorf("log is %d bytes, limit 4096", st.Size())
	}
	got := collect(t, l, false)
	if last := got[len(got)-1]; last.stream != streamStderr || !strings.Contains(last.data, "reached its limit") {
		t.Errorf("no note that output was dropped; last record %+v", last)
	}
}

func TestOutputLogCorruptRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out")
	if err := os.WriteFile(path, []byte{9, 0, 0, 0, 1, 'x'}, 0o600); err != nil {
		t.Fatal(err)
	}
	err := endedOutputLog(path).follow(context.Background(), false, func(byte, []byte) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "corrupt record") {
		t.Fatalf("err = %v, want a corrupt record", err)
	}
	// A record cut short (the writer died mid-write) is not an error: it is
	// where the readable log ends.
	if err := os.WriteFile(path, []byte{1, 0, 0, 0, 9, 'x'}, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := endedOutputLog(path).follow(context.Background(), false, func(byte, []byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

func FuzzOutputLogRead(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 1, 'x', 2, 0, 0, 0, 0})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "out")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		total := 0
		_ = endedOutputLog(path).follow(context.Background(), false, func(st byte, d []byte) error {
			if st != streamStdout && st != streamStderr || len(d) > maxRecord {
				t.Fatalf("record stream %d, %d bytes", st, len(d))
			}
			total += len(d) + recordHeader
			return nil
		})
		if total > len(b) {
			t.Fatalf("read %d bytes of records from %d", total, len(b))
		}
	})
}
