package agent

import (
	"os"
	"sync"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// A pod container's own stdin and terminal (ContainerStart.Stdin, .TTY):
// the container's process gets what an interactive exec gets (execStdio,
// execInput): a stdin pipe fed by CONTAINER_STDIN frames, or a new pty of
// its root's devpts as stdin, stdout, stderr and controlling terminal of
// its session, sized by CONTAINER_RESIZE; with a terminal its output
// comes back as CONTAINER_OUT stream 1 alone.

// containerStdio opens what container c's process (cs) reads and writes
// in root, as id: stdin /dev/null and two pipes without ContainerStart's
// Stdin and TTY.
func (s *session) containerStdio(c *podContainer, cs *channel.ContainerStart, root string, id Identity) (*execStdio, error) {
	return s.execStdio(cs.Stdin, cs.TTY, c.in, root, id)
}

// pumpOutputs sends what the process's outputs carry (stdout and stderr,
// or a terminal's master alone: stream 1) as frames made by frame.
func (s *session) pumpOutputs(wg *sync.WaitGroup, out []*os.File, frame func(stream byte, b []byte) error) {
	wg.Add(len(out))
	for i, r := range out {
		stream := byte(i + 1)
		go s.pump(wg, r, func(b []byte) error { return frame(stream, b) })
	}
}

// input is container index's input (nil: no such container, or one
// without stdin and terminal).
func (p *pod) input(index int) *execInput {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.containers[index]; ok {
		return c.in
	}
	return nil
}

// containerStdin applies a CONTAINER_STDIN: input for the container's
// process, or its end. Input for a container without stdin, or one that
// ended, is dropped.
func (s *session) containerStdin(in *channel.ContainerInput) {
	s.pod.input(in.Index).write(in.Data)
}

// containerResize applies a CONTAINER_RESIZE to the container's
// terminal, if it has one.
func (s *session) containerResize(r *channel.ContainerResize) {
	in := s.pod.input(r.Index)
	if in == nil {
		return
	}
	if err := in.resize(r.Size()); err != nil {
		s.log.Warn("resizing a container's terminal", "container", r.Index, "err", err)
	}
}

// end ends the input of a process that exited: further input is dropped.
func (in *execInput) end() {
	if in != nil && in.feed != nil {
		in.feed.Close()
	}
}
