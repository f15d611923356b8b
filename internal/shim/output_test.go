package shim

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/fifo"
)

// TestOpenOutput: a task's output fifo opened while its reader is there
// carries the output, and once the reader has gone a write fails at once
// (EPIPE) instead of blocking; with no reader at all the open gives up
// when its context ends and the output is discarded, so the follower (and
// the task's exit) is never stuck on it.
func TestOpenOutput(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stdout")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := fifo.OpenFifo(context.Background(), path, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := openOutputs(context.Background(), path, "")
	if _, err := w.Write([]byte("out")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "out" {
		t.Fatalf("read %q, %v", buf, err)
	}
	r.Close()
	if _, err := w.Write([]byte("more")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("a write after the reader left: %v, want EPIPE", err)
	}
	w.Close()

	lonely := filepath.Join(dir, "stderr")
	if err := syscall.Mkfifo(lonely, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	d := openOutput(ctx, lonely)
	if _, ok := d.(nopCloser); !ok {
		t.Fatalf("a fifo without a reader: %T, want the discarding writer", d)
	}
	if _, err := os.Stat(lonely); err != nil {
		t.Fatal(err)
	}
}
