package shim

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/containerd/fifo"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
)

// recordingStream is the client side of ExecInteractive as far as
// execInput uses it: what it sends, in order.
type recordingStream struct {
	bulwarkv1.Host_ExecInteractiveClient
	mu   sync.Mutex
	sent []*bulwarkv1.ExecInput
}

func (r *recordingStream) Send(m *bulwarkv1.ExecInput) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, m)
	return nil
}

// TestCloseIODrainsStdin: containerd closes its side of the stdin fifo and
// asks CloseIO at once, while the fifo still holds input the copy has not
// read (crictl exec -i with 42 KB piped in). Every byte goes out before
// stdin_close, and nothing after it. Before, CloseIO sent stdin_close and
// closed the fifo at once: the command read nothing, and the copy's next
// chunk broke the stream.
func TestCloseIODrainsStdin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stdin")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("piped-in line\n"), 3000)
	ctx := context.Background()
	// The writer first, as containerd's: it fills the fifo's buffer.
	w, err := fifo.OpenFifo(ctx, path, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	stream := &recordingStream{}
	in := &execInput{out: stream.Send}
	r, err := fifo.OpenFifo(ctx, path, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	in.fifo, in.copied = r, make(chan struct{})
	if _, err := w.Write(want); err != nil {
		t.Fatal(err)
	}
	w.Close()
	in.closeIO() // before the copy has read a byte
	go func() {
		defer close(in.copied)
		copyStdin(in, r)
	}()
	<-in.copied
	var got []byte
	closes := 0
	for i, m := range stream.sent {
		switch x := m.GetInput().(type) {
		case *bulwarkv1.ExecInput_Stdin:
			if closes > 0 {
				t.Fatalf("message %d: input after stdin_close", i)
			}
			got = append(got, x.Stdin...)
		case *bulwarkv1.ExecInput_StdinClose:
			closes++
		}
	}
	if !bytes.Equal(got, want) || closes != 1 {
		t.Fatalf("sent %d of %d bytes, then %d stdin_close (want all, then one)", len(got), len(want), closes)
	}
	_ = os.Remove(path)
}
