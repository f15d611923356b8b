package kvm

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// A pod container's own stdin and terminal (channel.ContainerStart.Stdin
// and .TTY): StartContainer asks for them, ContainerStdin,
// CloseContainerStdin and ResizeContainer feed them (CONTAINER_STDIN and
// CONTAINER_RESIZE frames). With a terminal, the container's output,
// stdout and stderr merged, is written to StartContainer's stdout.

// ErrContainerExited is returned for input to a container whose process
// has exited.
var ErrContainerExited = errors.New("kvm: the container has exited")

// ErrInputEnded is returned for input to a container after
// CloseContainerStdin.
var ErrInputEnded = errors.New("input after its end")

// containerIO is what a container's process asked for, and the end of
// its input. mu serialises its input: nothing is sent after its end.
type containerIO struct {
	stdin, tty bool
	mu         *sync.Mutex
	closed     bool // CONTAINER_STDIN's end was sent; under mu
}

func newContainerIO(cs *channel.ContainerStart) containerIO {
	return containerIO{stdin: cs.Stdin, tty: cs.TTY != nil, mu: &sync.Mutex{}}
}

// HasStdin reports whether the container's process was started with
// stdin.
func (c *Container) HasStdin() bool { return c.io.stdin }

// HasTTY reports whether the container's process runs on a terminal.
func (c *Container) HasTTY() bool { return c.io.tty }

// inputTarget is the running container index, for input.
func (s *Sandbox) inputTarget(index int) (*Container, error) {
	s.mu.Lock()
	c := s.pod.containers[index]
	s.mu.Unlock()
	switch {
	case c == nil || !c.seen:
		return nil, fmt.Errorf("kvm: the pod has no container %d", index)
	case isClosed(c.done):
		return nil, ErrContainerExited
	}
	return c, nil
}

// stdinTarget is the running container index, which has stdin, with its
// input's lock held.
func (s *Sandbox) stdinTarget(index int) (*Container, error) {
	c, err := s.inputTarget(index)
	if err != nil {
		return nil, err
	}
	if !c.io.stdin {
		return nil, fmt.Errorf("kvm: container %d has no stdin", index)
	}
	c.io.mu.Lock()
	return c, nil
}

// ContainerStdin sends data as input for container index's process, in
// CONTAINER_STDIN frames of at most channel.MaxStdinChunk bytes. It fails
// for a container started without stdin, after CloseContainerStdin, and
// once the container exited (ErrContainerExited). Safe for concurrent
// use; concurrent calls for one container interleave whole calls.
func (s *Sandbox) ContainerStdin(index int, data []byte) error {
	c, err := s.stdinTarget(index)
	if err != nil {
		return err
	}
	defer c.io.mu.Unlock()
	if c.io.closed {
		return fmt.Errorf("kvm: container %d: %w", index, ErrInputEnded)
	}
	for len(data) > 0 {
		n := min(len(data), channel.MaxStdinChunk)
		if err := s.writeRaw(channel.TypeContainerStdin, channel.ContainerInput{Index: index, Data: data[:n]}.Encode(), 30*time.Second); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// CloseContainerStdin ends container index's input (its stdin pipe
// reads the end; a terminal stays open). A second call does nothing.
func (s *Sandbox) CloseContainerStdin(index int) error {
	c, err := s.stdinTarget(index)
	if err != nil {
		return err
	}
	defer c.io.mu.Unlock()
	if c.io.closed {
		return nil
	}
	c.io.closed = true
	return s.writeRaw(channel.TypeContainerStdin, channel.ContainerInput{Index: index}.Encode(), 30*time.Second)
}

// ResizeContainer gives container index's terminal a new size (its
// foreground process group gets SIGWINCH). It fails for a container
// without a terminal, a size out of bounds, and once the container
// exited (ErrContainerExited).
func (s *Sandbox) ResizeContainer(index int, ws WindowSize) error {
	r := channel.ContainerResize{Index: index, Rows: ws.Rows, Cols: ws.Cols}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("kvm: %w", err)
	}
	c, err := s.inputTarget(index)
	if err != nil {
		return err
	}
	if !c.io.tty {
		return fmt.Errorf("kvm: container %d has no terminal", index)
	}
	return s.write(channel.TypeContainerResize, r, 2*time.Second)
}
