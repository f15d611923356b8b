package hostd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/kvm/channel"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// execQueue is how many output pieces of one exec wait for a slow client
// before further output is dropped (the guest channel is never held up).
const execQueue = 1024

// Exec runs a command in a running sandbox and streams its output.
func (s *Service) Exec(req *bulwarkv1.ExecRequest, stream bulwarkv1.Host_ExecServer) error {
	t, err := s.execTarget(req)
	if err != nil {
		return err
	}
	return s.serveExec(stream.Context(), t, req.GetArgs(), kvm.ExecOptions{}, nil, stream.Send)
}

// ExecInteractive is Exec with input and/or a terminal: the first
// message is the command, then stdin chunks, the end of stdin, terminal
// sizes and signals for the command. A message out of place, or out of
// bounds, ends the call with InvalidArgument naming its field.
//
// A signal rides on the stream that started the exec, not on a call of
// its own: only the client that started an exec can signal it, no exec
// id is handed out to guess or to outlive its exec, and a signal is
// ordered after the start it follows.
func (s *Service) ExecInteractive(stream bulwarkv1.Host_ExecInteractiveServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return status.Error(codes.InvalidArgument, "start: the first message must be the command (start)")
	}
	var opts kvm.ExecOptions
	if tty := start.GetTty(); tty != nil {
		ws, err := terminalSize("start.tty", tty)
		if err != nil {
			return err
		}
		opts.TTY = &ws
	}
	req := start.GetExec()
	if req == nil {
		return status.Error(codes.InvalidArgument, "start.exec: missing: name the sandbox and the command")
	}
	t, err := s.execTarget(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	var pr *io.PipeReader
	var pw *io.PipeWriter
	if start.GetStdin() {
		pr, pw = io.Pipe()
		opts.Stdin = pr
		defer pr.Close() // the feeder ends at its next read; a blocked Write returns
	}
	var resize chan kvm.WindowSize
	if opts.TTY != nil {
		resize = make(chan kvm.WindowSize, 1)
		opts.Resize = resize
	}
	signals := make(chan int, 1)
	opts.Signals = signals
	bad := make(chan error, 1)
	go func() {
		bad <- receiveExecInput(ctx, stream, pw, resize, signals)
	}()
	return s.serveExec(ctx, t, req.GetArgs(), opts, bad, stream.Send)
}

// receiveExecInput applies the client's messages after start until its
// side ends (then stdin ends too) or one is out of place: that one's
// error is returned (nil at the end of the client's stream). Signals go
// to signals, in order.
func receiveExecInput(ctx context.Context, stream bulwarkv1.Host_ExecInteractiveServer, stdin *io.PipeWriter, resize chan kvm.WindowSize, signals chan<- int) error {
	closeStdin := func(err error) {
		if stdin != nil {
			stdin.CloseWithError(err)
		}
	}
	closed := false
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			closeStdin(nil)
			return nil
		}
		if err != nil {
			closeStdin(err)
			return nil // the call ended: its context says why
		}
		switch x := in.GetInput().(type) {
		case *bulwarkv1.ExecInput_Stdin:
			if stdin == nil {
				return status.Error(codes.InvalidArgument, "stdin: the command has no stdin (start.stdin was not set)")
			}
			if closed {
				return status.Error(codes.InvalidArgument, "stdin: input after stdin_close")
			}
			if len(x.Stdin) == 0 || len(x.Stdin) > channel.MaxStdinChunk {
				return status.Errorf(codes.InvalidArgument, "stdin: %d bytes, want 1..%d", len(x.Stdin), channel.MaxStdinChunk)
			}
			if _, err := stdin.Write(x.Stdin); err != nil {
				return nil // the exec ended; what it did not read is dropped
			}
		case *bulwarkv1.ExecInput_StdinClose:
			if stdin == nil {
				return status.Error(codes.InvalidArgument, "stdin_close: the command has no stdin (start.stdin was not set)")
			}
			closed = true
			closeStdin(nil)
		case *bulwarkv1.ExecInput_Resize:
			if resize == nil {
				return status.Error(codes.InvalidArgument, "resize: the command has no terminal (start.tty was not set)")
			}
			ws, err := terminalSize("resize", x.Resize)
			if err != nil {
				return err
			}
			select { // the newest size wins over one not sent yet
			case <-resize:
			default:
			}
			select {
			case resize <- ws:
			case <-ctx.Done():
				return nil
			}
		case *bulwarkv1.ExecInput_Signal:
			if x.Signal < 1 || x.Signal > channel.MaxSignal {
				return status.Errorf(codes.InvalidArgument, "signal: %d, want 1..%d", x.Signal, channel.MaxSignal)
			}
			select {
			case signals <- int(x.Signal):
			case <-ctx.Done():
				return nil
			}
		case *bulwarkv1.ExecInput_Start:
			return status.Error(codes.InvalidArgument, "start: sent twice (only the first message is the command)")
		default:
			return status.Error(codes.InvalidArgument, "input: an empty message (set stdin, stdin_close, resize or signal)")
		}
	}
}

// terminalSize checks a TerminalSize: rows and columns 1..channel.MaxWindowSize.
func terminalSize(field string, t *bulwarkv1.TerminalSize) (kvm.WindowSize, error) {
	if t.GetRows() < 1 || t.GetRows() > channel.MaxWindowSize || t.GetCols() < 1 || t.GetCols() > channel.MaxWindowSize {
		return kvm.WindowSize{}, status.Errorf(codes.InvalidArgument, "%s: %dx%d: want rows and columns 1..%d", field, t.GetRows(), t.GetCols(), channel.MaxWindowSize)
	}
	return kvm.WindowSize{Rows: uint16(t.GetRows()), Cols: uint16(t.GetCols())}, nil
}

// execTarget is where an exec runs: a running sandbox, and in a pod one
// of its started containers.
type execTarget struct {
	l *launch.Launched
	c *launch.Container // nil: beside the workload
}

// execTarget checks an ExecRequest and finds where it runs.
func (s *Service) execTarget(req *bulwarkv1.ExecRequest) (execTarget, error) {
	x := channel.Exec{Args: req.GetArgs()}
	if err := x.Validate(); err != nil {
		return execTarget{}, status.Errorf(codes.InvalidArgument, "args: %v", err)
	}
	sb, err := s.find(req.GetId())
	if err != nil {
		return execTarget{}, err
	}
	sb.mu.Lock()
	l := sb.launched
	sb.mu.Unlock()
	if l == nil {
		info := sb.snapshot()
		return execTarget{}, status.Errorf(codes.FailedPrecondition, "sandbox %s is %s: exec runs only beside a running workload", info.GetId(), info.GetStatus())
	}
	pod := sb.snapshot().GetPod() // not l.IsPod(): a pod taken over after a restart is one too
	switch {
	case pod && req.GetContainer() == "":
		return execTarget{}, status.Errorf(codes.InvalidArgument, "container: sandbox %s is a pod: name the container to exec in", sb.snapshot().GetId())
	case !pod && req.GetContainer() != "":
		return execTarget{}, status.Errorf(codes.InvalidArgument, "container: sandbox %s is not a pod", sb.snapshot().GetId())
	case pod:
		_, pc, err := s.findContainer(req.GetId(), req.GetContainer())
		if err != nil {
			return execTarget{}, err
		}
		sb.mu.Lock()
		c := pc.c
		sb.mu.Unlock()
		if c == nil {
			return execTarget{}, status.Errorf(codes.FailedPrecondition, "container %s has not started", req.GetContainer())
		}
		return execTarget{l: l, c: c}, nil
	}
	return execTarget{l: l}, nil
}

// serveExec runs the command and sends its output, then its exit code.
// An error from bad (the client's input) ends it with that error.
func (s *Service) serveExec(ctx context.Context, t execTarget, args []string, opts kvm.ExecOptions, bad <-chan error, send func(*bulwarkv1.ExecEvent) error) error {
	// Output is queued for the client: the sandbox's channel reader must
	// never wait for a slow or gone client.
	out := make(chan *bulwarkv1.LogChunk, execQueue)
	var dropped atomic.Bool
	writer := func(st bulwarkv1.LogChunk_Stream) writerFunc {
		return func(p []byte) (int, error) {
			select {
			case out <- &bulwarkv1.LogChunk{Stream: st, Data: append([]byte(nil), p...)}:
			default:
				dropped.Store(true)
			}
			return len(p), nil
		}
	}
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		stdout, stderr := writer(bulwarkv1.LogChunk_STREAM_STDOUT), writer(bulwarkv1.LogChunk_STREAM_STDERR)
		var code int
		var err error
		if t.c != nil {
			code, err = t.l.ExecContainerWith(ctx, t.c, args, opts, stdout, stderr)
		} else {
			code, err = t.l.Sandbox().ExecWith(ctx, args, opts, stdout, stderr)
		}
		done <- result{code, err}
	}()
	output := func(c *bulwarkv1.LogChunk) error {
		return send(&bulwarkv1.ExecEvent{Event: &bulwarkv1.ExecEvent_Output{Output: c}})
	}
	for {
		select {
		case c := <-out:
			if err := output(c); err != nil {
				return err
			}
		case err := <-bad:
			if err != nil {
				return err
			}
			bad = nil // the client's side ended: the exec goes on
		case r := <-done:
			for len(out) > 0 { // what came before the end
				if err := output(<-out); err != nil {
					return err
				}
			}
			if dropped.Load() {
				output(&bulwarkv1.LogChunk{Stream: bulwarkv1.LogChunk_STREAM_STDERR, Data: []byte("\n[bulwark: output dropped: the client read too slowly]\n")})
			}
			var ge *kvm.GuestError
			switch {
			case r.err == nil:
			case errors.As(r.err, &ge): // could not start: the reason on stderr, 126/127
				output(&bulwarkv1.LogChunk{Stream: bulwarkv1.LogChunk_STREAM_STDERR, Data: []byte(fmt.Sprintf("exec: %s\n", ge.Message))})
			case errors.Is(r.err, kvm.ErrExecLimit):
				return status.Error(codes.ResourceExhausted, r.err.Error())
			case ctx.Err() != nil:
				return status.FromContextError(ctx.Err()).Err()
			default:
				return status.Errorf(codes.Aborted, "exec: %v", r.err)
			}
			return send(&bulwarkv1.ExecEvent{Event: &bulwarkv1.ExecEvent_ExitCode{ExitCode: int32(r.code)}})
		}
	}
}
