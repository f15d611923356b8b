// Processes run beside a container's workload (ctr tasks exec, crictl exec).

package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/hostd"
	"github.com/bulwark-project/bulwark/kvm/channel"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/protobuf"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/fifo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/status"
)

// Exec records a process to run beside the workload (started by Start).
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if _, ok := c.execs[r.ExecID]; ok {
		return nil, errdefs.ToGRPCf(errdefs.ErrAlreadyExists, "bulwark shim: exec %s already exists", r.ExecID)
	}
	var ps specs.Process
	if r.Spec == nil || json.Unmarshal(r.Spec.GetValue(), &ps) != nil || len(ps.Args) == 0 {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "bulwark shim: exec %s: want a process spec with a command", r.ExecID)
	}
	p := &proc{id: r.ExecID, stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, status: tasktypes.Status_CREATED,
		exited: make(chan struct{}), args: ps.Args, terminal: r.Terminal}
	if r.Terminal {
		if p.size, err = consoleSize(&ps); err != nil {
			return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "bulwark shim: exec %s: %v", r.ExecID, err)
		}
	}
	c.execs[r.ExecID] = p
	s.send(&eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return empty, nil
}

// startExec runs an exec'd process through the host service's
// ExecInteractive (startInteractive), whatever its stdio: the stream
// carries its stdin (with a stdin fifo), terminal sizes (with a terminal)
// and, for every exec, Kill's signals (killExec).
func (s *service) startExec(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if c.task.status != tasktypes.Status_RUNNING || c.sandbox == "" {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "bulwark shim: container %s does not run a workload", r.ID)
	}
	if p.status != tasktypes.Status_CREATED {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "bulwark shim: exec %s already started", r.ExecID)
	}
	hc, err := dialHost()
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	ectx, cancel := context.WithCancel(s.ctx)
	req := &bulwarkv1.ExecRequest{Id: c.sandbox, Args: p.args}
	if c.pod != nil { // in its own root, in the pod's VM
		req.Container = c.task.id
	}
	stream, err := s.startInteractive(ectx, hc, p, req)
	if err != nil {
		cancel()
		hc.Close()
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "bulwark exec: %s", status.Convert(err).Message())
	}
	p.status, p.pid, p.cancel = tasktypes.Status_RUNNING, c.task.pid, cancel
	go func() {
		defer hc.Close()
		defer cancel()
		stdout, stderr := openOutput(s.ctx, p.stdout), openOutput(s.ctx, p.stderr)
		code := uint32(255)
		for {
			ev, err := stream.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					fmt.Fprintf(stderr, "bulwark exec: %s\n", status.Convert(err).Message())
				}
				break
			}
			if out := ev.GetOutput(); out != nil {
				w := stdout
				if out.GetStream() == bulwarkv1.LogChunk_STREAM_STDERR {
					w = stderr
				}
				w.Write(out.GetData())
			}
			if e, ok := ev.GetEvent().(*bulwarkv1.ExecEvent_ExitCode); ok {
				code = uint32(e.ExitCode)
			}
		}
		if in := p.input; in != nil && in.fifo != nil {
			in.fifo.Close() // its copy ends
		}
		stdout.Close()
		stderr.Close()
		s.mu.Lock()
		p.exit(code)
		s.mu.Unlock()
		s.send(&eventstypes.TaskExit{ContainerID: r.ID, ID: p.id, Pid: p.pid, ExitStatus: p.exitStatus, ExitedAt: protobuf.ToTimestamp(p.exitedAt)})
	}()
	s.send(&eventstypes.TaskExecStarted{ContainerID: r.ID, ExecID: r.ExecID, Pid: p.pid})
	return &taskAPI.StartResponse{Pid: p.pid}, nil
}

// execInput is an exec's side of ExecInteractive (or a pod container's
// of ContainerInput: attach.go): stdin, its end, resizes and (for an
// exec) signals go out on one stream, one message at a time.
type execInput struct {
	mu     sync.Mutex
	out    func(*bulwarkv1.ExecInput) error // the stream's Send
	fifo   io.Closer                        // the stdin fifo; nil without one
	copied chan struct{}                    // closed when the fifo's copy ended
	closed bool                             // stdin_close was sent
}

// errStdinClosed ends a copy that would send input after stdin_close.
var errStdinClosed = errors.New("bulwark shim: stdin already closed")

func (in *execInput) send(m *bulwarkv1.ExecInput) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	switch m.GetInput().(type) {
	case *bulwarkv1.ExecInput_StdinClose:
		if in.closed {
			return nil
		}
		in.closed = true
	case *bulwarkv1.ExecInput_Stdin:
		if in.closed {
			return errStdinClosed
		}
	}
	return in.out(m)
}

// closeIOGrace is how long CloseIO lets the stdin fifo's copy drain what
// the fifo still holds before it ends stdin itself.
const closeIOGrace = 10 * time.Second

// closeIO is CloseIO's stdin end. containerd asks for it once it closed
// its side of the fifo, when the fifo may still hold input the copy has
// not read: the copy ends stdin at the fifo's end, after the last byte;
// only a copy that has not ended within closeIOGrace (a command that
// reads nothing) is cut short.
func (in *execInput) closeIO() {
	if in.fifo == nil || in.copied == nil {
		in.closeStdin()
		return
	}
	go func() {
		select {
		case <-in.copied:
		case <-time.After(closeIOGrace):
			in.closeStdin()
		}
	}()
}

// closeStdin ends the process's stdin (CloseIO, or the fifo's end).
func (in *execInput) closeStdin() {
	if in.fifo == nil {
		return
	}
	_ = in.send(&bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_StdinClose{StdinClose: true}})
	_ = in.fifo.Close()
}

// startInteractive starts p through ExecInteractive and, with a stdin
// fifo, copies it into the stream until its end (then stdin ends);
// without one the command's stdin is /dev/null. s.mu is held.
func (s *service) startInteractive(ctx context.Context, hc *hostd.Client, p *proc, req *bulwarkv1.ExecRequest) (bulwarkv1.Host_ExecInteractiveClient, error) {
	stream, err := hc.ExecInteractive(ctx)
	if err != nil {
		return nil, err
	}
	start := &bulwarkv1.ExecStart{Exec: req, Stdin: p.stdin != ""}
	if p.terminal {
		start.Tty = p.size
	}
	if err := stream.Send(&bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Start{Start: start}}); err != nil {
		return nil, err
	}
	in := &execInput{out: stream.Send}
	if p.stdin != "" {
		if err := in.copyFifo(ctx, p.stdin); err != nil {
			return nil, err
		}
	}
	p.input = in
	return stream, nil
}

// copyFifo opens the stdin fifo path and copies it into the stream until
// its end (copyStdin).
func (in *execInput) copyFifo(ctx context.Context, path string) error {
	f, err := fifo.OpenFifo(ctx, path, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("opening the stdin fifo: %w", err)
	}
	in.fifo, in.copied = f, make(chan struct{})
	go func() {
		defer close(in.copied)
		copyStdin(in, f)
	}()
	return nil
}

// copyStdin sends what the stdin fifo f gives, in chunks, until its end
// (or the stream's), then ends stdin.
func copyStdin(in *execInput, f io.Reader) {
	buf := make([]byte, channel.MaxStdinChunk)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if in.send(&bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Stdin{Stdin: append([]byte(nil), buf[:n]...)}}) != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	in.closeStdin()
}

// consoleSize is the initial size of process p's terminal: its spec's
// consoleSize, 24x80 without one.
func consoleSize(p *specs.Process) (*bulwarkv1.TerminalSize, error) {
	b := p.ConsoleSize
	if b == nil {
		return &bulwarkv1.TerminalSize{Rows: 24, Cols: 80}, nil
	}
	size, err := terminalSize(uint32(min(b.Height, 1<<32-1)), uint32(min(b.Width, 1<<32-1)))
	if err != nil {
		return nil, fmt.Errorf("process.consoleSize: %w", err)
	}
	return size, nil
}

// terminalSize checks a terminal's size: rows and columns 1..channel.MaxWindowSize.
func terminalSize(rows, cols uint32) (*bulwarkv1.TerminalSize, error) {
	if rows < 1 || rows > channel.MaxWindowSize || cols < 1 || cols > channel.MaxWindowSize {
		return nil, fmt.Errorf("terminal size %dx%d: want rows and columns 1..%d", rows, cols, channel.MaxWindowSize)
	}
	return &bulwarkv1.TerminalSize{Rows: rows, Cols: cols}, nil
}
