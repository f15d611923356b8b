package agent

import (
	"io"
	"sync"
)

// MaxStdinPending bounds the workload's input the agent holds that the
// workload has not read yet. Past it the workload's stdin is closed and
// further input dropped: the agent never stops reading the host's frames
// (a STOP or ABORT behind unread input must still arrive).
const MaxStdinPending = 16 << 20

// stdinFeed writes the host's STDIN frames to the workload's stdin from a
// goroutine of its own, holding at most MaxStdinPending bytes. Safe for
// one producer (Push, Close) and its own writer.
type stdinFeed struct {
	mu      sync.Mutex
	cond    *sync.Cond
	queue   [][]byte
	pending int
	closed  bool // no more input: the writer closes w once the queue is written
	dropped bool // the bound was passed or the workload stopped reading
	w       io.WriteCloser
}

// newStdinFeed starts writing to w; Close ends the input.
func newStdinFeed(w io.WriteCloser) *stdinFeed {
	f := newPendingFeed()
	f.attach(w)
	return f
}

// newPendingFeed is a feed whose writer is not there yet (an exec whose
// process is being started): Push queues, within the bound, until attach.
func newPendingFeed() *stdinFeed {
	f := &stdinFeed{}
	f.cond = sync.NewCond(&f.mu)
	return f
}

// attach starts writing the queue, and what follows, to w; once only.
func (f *stdinFeed) attach(w io.WriteCloser) {
	f.mu.Lock()
	f.w = w
	f.mu.Unlock()
	go f.run()
}

// Push queues b (copied by the caller: frames are not reused) for the
// workload. It never blocks.
func (f *stdinFeed) Push(b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.dropped {
		return
	}
	if f.pending+len(b) > MaxStdinPending {
		f.dropped, f.queue, f.pending = true, nil, 0
		f.cond.Signal()
		return
	}
	f.queue = append(f.queue, b)
	f.pending += len(b)
	f.cond.Signal()
}

// Close marks the end of the input.
func (f *stdinFeed) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.cond.Signal()
}

func (f *stdinFeed) run() {
	defer f.w.Close()
	for {
		f.mu.Lock()
		for len(f.queue) == 0 && !f.closed && !f.dropped {
			f.cond.Wait()
		}
		if f.dropped || len(f.queue) == 0 {
			f.mu.Unlock()
			return
		}
		b := f.queue[0]
		f.queue = f.queue[1:]
		f.mu.Unlock()
		_, err := f.w.Write(b)
		f.mu.Lock()
		f.pending -= len(b)
		if err != nil { // the workload closed its stdin
			f.dropped, f.queue, f.pending = true, nil, 0
		}
		f.mu.Unlock()
		if err != nil {
			return
		}
	}
}
