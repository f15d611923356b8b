// A pod VM container's own stdin and terminal (CRI stdin: true, tty:
// true; crictl attach, kubectl run -it, kubectl attach): the container's
// process is started with them (AddContainerRequest.stdin and .tty, or
// RunRequest.container_stdin and .container_tty for the pod's first
// container), and the host service's ContainerInput carries the stdin
// fifo, CloseIO and ResizePty to it, through the same execInput as an
// interactive exec's.

package shim

import (
	"context"
	"fmt"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
)

// wantsTerminal reports whether a task asks for a terminal (the task's
// request or its spec's process: the CRI sets both).
func wantsTerminal(r *taskAPI.CreateTaskRequest, spec *specs.Spec) bool {
	return r.Terminal || (spec.Process != nil && spec.Process.Terminal)
}

// checkTerminal refuses a terminal for a container whose own process
// cannot have one, before anything is copied or launched: a pod's
// sandbox ("pause") container, which runs no process, and a container
// that runs as a sandbox of its own (not in a pod VM), whose workload the
// host service's Run starts without stdin or terminal. Create calls it
// once c.pause and c.pod are known.
func checkTerminal(r *taskAPI.CreateTaskRequest, spec *specs.Spec, c *container) error {
	if !wantsTerminal(r, spec) {
		return nil
	}
	if c.pause {
		return errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "bulwark shim: container %s: terminal: a pod's sandbox container runs no process", r.ID)
	}
	if c.pod == nil {
		return errdefs.ToGRPCf(errdefs.ErrNotImplemented, "bulwark shim: container %s: terminal: %v", r.ID, errTerminal)
	}
	return nil
}

// taskTerminal marks a pod VM container's task as on a terminal, of its
// spec's consoleSize (24x80 without one; ResizePty before Start changes
// it), when it asks for one.
func taskTerminal(t *proc, r *taskAPI.CreateTaskRequest, spec *specs.Spec) error {
	if !wantsTerminal(r, spec) {
		return nil
	}
	p := spec.Process
	if p == nil {
		p = &specs.Process{}
	}
	size, err := consoleSize(p)
	if err != nil {
		return errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "bulwark shim: container %s: %v", r.ID, err)
	}
	t.terminal, t.size = true, size
	return nil
}

// taskStdio is what a pod VM container's process is started with: a
// stdin when its task has a stdin fifo, a terminal of the task's size
// when it asked for one.
func taskStdio(t *proc) (stdin bool, tty *bulwarkv1.TerminalSize) {
	if t.terminal {
		tty = t.size
	}
	return t.stdin != "", tty
}

// startTaskInput connects a running pod VM container's task (on pod VM
// podID) with a stdin fifo or a terminal to its process through
// ContainerInput: the fifo is copied in until its end (or CloseIO), and
// ResizePty goes out as resizes, until the task exits; a ResizePty that
// came while it started (its terminal started at size) is sent at once.
// s.mu is held.
func (s *service) startTaskInput(t *proc, podID string, size *bulwarkv1.TerminalSize) error {
	if t.stdin == "" && !t.terminal {
		return nil
	}
	hc, err := dialHost()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(s.ctx)
	stream, err := hc.ContainerInput(ctx)
	if err == nil {
		err = stream.Send(&bulwarkv1.ContainerInputRequest{Input: &bulwarkv1.ContainerInputRequest_Container{Container: &bulwarkv1.ContainerRequest{Id: podID, Name: t.id}}})
	}
	in := &execInput{out: func(m *bulwarkv1.ExecInput) error { return stream.Send(containerInput(m)) }}
	if err == nil && t.stdin != "" {
		err = in.copyFifo(ctx, t.stdin)
	}
	if err != nil {
		cancel()
		hc.Close()
		return fmt.Errorf("container %s: its input: %w", t.id, err)
	}
	t.input = in
	if t.terminal && !proto.Equal(t.size, size) {
		if err := in.send(&bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Resize{Resize: t.size}}); err != nil {
			log.G(s.ctx).WithError(err).Warnf("bulwark shim: container %s: resizing its terminal", t.id)
		}
	}
	go func() {
		<-t.exited
		if in.fifo != nil {
			in.fifo.Close() // its copy ends
		}
		cancel()
		hc.Close()
	}()
	return nil
}

// containerInput is ContainerInput's message for an execInput's message.
func containerInput(m *bulwarkv1.ExecInput) *bulwarkv1.ContainerInputRequest {
	switch x := m.GetInput().(type) {
	case *bulwarkv1.ExecInput_Stdin:
		return &bulwarkv1.ContainerInputRequest{Input: &bulwarkv1.ContainerInputRequest_Stdin{Stdin: x.Stdin}}
	case *bulwarkv1.ExecInput_StdinClose:
		return &bulwarkv1.ContainerInputRequest{Input: &bulwarkv1.ContainerInputRequest_StdinClose{StdinClose: x.StdinClose}}
	case *bulwarkv1.ExecInput_Resize:
		return &bulwarkv1.ContainerInputRequest{Input: &bulwarkv1.ContainerInputRequest_Resize{Resize: x.Resize}}
	}
	return &bulwarkv1.ContainerInputRequest{}
}

// logTaskInput reports a container whose input could not be connected:
// it runs on, but what is typed into it is lost.
func logTaskInput(ctx context.Context, err error) {
	log.G(ctx).WithError(err).Warn("bulwark shim: a container's stdin and terminal are not connected")
}
