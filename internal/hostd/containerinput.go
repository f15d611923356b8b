package hostd

import (
	"context"
	"errors"
	"io"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/kvm/channel"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A pod container's own stdin and terminal: AddContainerRequest.stdin and
// .tty (RunRequest.container_stdin and .container_tty for a pod's first
// container) start its process with them; ContainerInput feeds them.

// containerStdio checks a container's stdin and terminal request and
// sets them in co; prefix names the request's fields ("container_" for
// RunRequest's).
func containerStdio(co *launch.ContainerOptions, prefix string, stdin bool, tty *bulwarkv1.TerminalSize) error {
	co.Stdin = stdin
	if tty != nil {
		ws, err := terminalSize(prefix+"tty", tty)
		if err != nil {
			return err
		}
		co.TTY = &ws
	}
	return nil
}

// firstContainerStdio is the first container of pod request req with its
// name, stdin and terminal; they are for a pod only.
func firstContainerStdio(req *bulwarkv1.RunRequest) (launch.ContainerOptions, error) {
	co := launch.ContainerOptions{Name: req.GetContainer()}
	if !req.GetPod() {
		switch {
		case req.GetContainerStdin():
			return co, status.Error(codes.InvalidArgument, "container_stdin: for a pod's first container (pod) only; 'launcher run -i' is not served by the host service")
		case req.GetContainerTty() != nil:
			return co, status.Error(codes.InvalidArgument, "container_tty: for a pod's first container (pod) only; 'launcher run -t' is not served by the host service")
		}
		return co, nil
	}
	return co, containerStdio(&co, "container_", req.GetContainerStdin(), req.GetContainerTty())
}

// ContainerInput feeds a running pod container's stdin and terminal
// until the client's side ends or the container exits, and answers with
// the container.
func (s *Service) ContainerInput(stream bulwarkv1.Host_ContainerInputServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	req := first.GetContainer()
	if req == nil {
		return status.Error(codes.InvalidArgument, "container: the first message must name the container (container)")
	}
	sb, pc, err := s.findContainer(req.GetId(), req.GetName())
	if err != nil {
		return err
	}
	sb.mu.Lock()
	c := pc.c
	sb.mu.Unlock()
	if c == nil {
		return status.Errorf(codes.FailedPrecondition, "container %s has not started", req.GetName())
	}
	if !c.HasStdin() && !c.HasTTY() {
		return status.Errorf(codes.FailedPrecondition, "container %s has neither stdin nor a terminal (it was not added with stdin or tty, or it was taken over after a restart of the host service)", req.GetName())
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	bad := make(chan error, 1)
	go func() { bad <- receiveContainerInput(ctx, stream, c) }()
	select {
	case err := <-bad:
		if err != nil {
			return err
		}
	case <-c.Done():
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
	info, err := s.containerInfo(sb, req.GetName())
	if err != nil {
		return err
	}
	return stream.SendAndClose(info)
}

// containerSink is where a container's input goes: a
// *launch.Container.
type containerSink interface {
	HasStdin() bool
	HasTTY() bool
	Stdin([]byte) error
	CloseStdin() error
	Resize(kvm.WindowSize) error
}

var _ containerSink = (*launch.Container)(nil)

// receiveContainerInput applies the client's messages after the first
// to container c until the client's side ends (nil) or one is out of
// place (its error). Input once the container exited is dropped.
func receiveContainerInput(ctx context.Context, stream bulwarkv1.Host_ContainerInputServer, c containerSink) error {
	apply := func(field string, err error) error {
		switch {
		case err == nil || errors.Is(err, launch.ErrContainerExited) || ctx.Err() != nil:
			return nil
		case errors.Is(err, launch.ErrInputEnded):
			return status.Errorf(codes.InvalidArgument, "%s: the container's stdin was closed already (stdin_close)", field)
		}
		return status.Errorf(codes.Aborted, "%s: %v", field, err)
	}
	closed := false
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return nil // the call ended: its context says why
		}
		switch x := in.GetInput().(type) {
		case *bulwarkv1.ContainerInputRequest_Stdin:
			switch {
			case !c.HasStdin():
				return status.Error(codes.InvalidArgument, "stdin: the container has no stdin (it was not added with stdin)")
			case closed:
				return status.Error(codes.InvalidArgument, "stdin: input after stdin_close")
			case len(x.Stdin) == 0 || len(x.Stdin) > channel.MaxStdinChunk:
				return status.Errorf(codes.InvalidArgument, "stdin: %d bytes, want 1..%d", len(x.Stdin), channel.MaxStdinChunk)
			}
			if err := apply("stdin", c.Stdin(x.Stdin)); err != nil {
				return err
			}
		case *bulwarkv1.ContainerInputRequest_StdinClose:
			if !c.HasStdin() {
				return status.Error(codes.InvalidArgument, "stdin_close: the container has no stdin (it was not added with stdin)")
			}
			closed = true
			if err := apply("stdin_close", c.CloseStdin()); err != nil {
				return err
			}
		case *bulwarkv1.ContainerInputRequest_Resize:
			if !c.HasTTY() {
				return status.Error(codes.InvalidArgument, "resize: the container has no terminal (it was not added with tty)")
			}
			ws, err := terminalSize("resize", x.Resize)
			if err != nil {
				return err
			}
			if err := apply("resize", c.Resize(ws)); err != nil {
				return err
			}
		case *bulwarkv1.ContainerInputRequest_Container:
			return status.Error(codes.InvalidArgument, "container: sent twice (only the first message names the container)")
		default:
			return status.Error(codes.InvalidArgument, "input: an empty message (set stdin, stdin_close or resize)")
		}
	}
}
