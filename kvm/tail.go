package kvm

import (
	"bytes"
	"io"
	"strings"
	"sync"
)

// lineTail keeps the last n lines written to it (each cut at 512 bytes) and
// forwards everything to an optional writer. Safe for concurrent use.
type lineTail struct {
	mu      sync.Mutex
	n       int
	lines   []string
	partial []byte
	fwd     io.Writer
	drop    func(line string) bool
}

func newLineTail(n int, fwd io.Writer) *lineTail { return &lineTail{n: n, fwd: fwd} }

// setDrop leaves the lines for which drop is true out of the tail from
// now on (fwd still gets them); nil keeps every line.
func (t *lineTail) setDrop(drop func(line string) bool) {
	t.mu.Lock()
	t.drop = drop
	t.mu.Unlock()
}

func (t *lineTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fwd != nil {
		_, _ = t.fwd.Write(p) // a failing console writer must not stop the VM
	}
	rest := p
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			if len(t.partial) < 512 {
				t.partial = append(t.partial, rest[:min(len(rest), 512-len(t.partial))]...)
			}
			break
		}
		if len(t.partial) < 512 {
			t.partial = append(t.partial, rest[:min(i, 512-len(t.partial))]...)
		}
		t.push(string(t.partial))
		t.partial = t.partial[:0]
		rest = rest[i+1:]
	}
	return len(p), nil
}

func (t *lineTail) push(l string) {
	l = strings.TrimRight(l, "\r")
	if t.drop != nil && t.drop(l) {
		return
	}
	t.lines = append(t.lines, l)
	if len(t.lines) > t.n {
		t.lines = t.lines[len(t.lines)-t.n:]
	}
}

// String returns the kept lines, plus an unfinished last line.
func (t *lineTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := append([]string{}, t.lines...)
	if len(t.partial) > 0 {
		lines = append(lines, string(t.partial))
	}
	if len(lines) > t.n {
		lines = lines[len(lines)-t.n:]
	}
	return strings.Join(lines, "\n")
}
