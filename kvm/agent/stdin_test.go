package agent

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// TestStdinFeed: input reaches the workload in order and ends with
// Close; past MaxStdinPending unread bytes the workload's stdin is closed
// and Push still never blocks.
func TestStdinFeed(t *testing.T) {
	r, w := io.Pipe()
	f := newStdinFeed(w)
	f.Push([]byte("hello "))
	f.Push([]byte("world\n"))
	f.Close()
	f.Push([]byte("after close"))
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "hello world\n" {
		t.Fatalf("read %q, %v", got, err)
	}

	// A workload that never reads: the feed's writer blocks on its first
	// write; the rest is queued up to the bound, then dropped, and the
	// pipe is closed once that write returns.
	r2, w2 := io.Pipe()
	f2 := newStdinFeed(w2)
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	for range MaxStdinPending/len(chunk) + 2 {
		f2.Push(chunk) // must not block
	}
	got, err = io.ReadAll(r2) // reads the write in flight, then EOF: the rest was dropped
	if err != nil || len(got) > 2*len(chunk) || strings.Trim(string(got), "x") != "" {
		t.Fatalf("read %d bytes, %v; want at most the write in flight", len(got), err)
	}
}
