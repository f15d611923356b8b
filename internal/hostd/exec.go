package hostd

import (
	"errors"
	"fmt"
	"sync/atomic"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
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
	x := channel.Exec{Args: req.GetArgs()}
	if err := x.Validate(); err != nil {
		return status.Errorf(codes.InvalidArgument, "args: %v", err)
	}
	sb, err := s.find(req.GetId())
	if err != nil {
		return err
	}
	sb.mu.Lock()
	l := sb.launched
	sb.mu.Unlock()
	if l == nil {
		info := sb.snapshot()
		return status.Errorf(codes.FailedPrecondition, "sandbox %s is %s: exec runs only beside a running workload", info.GetId(), info.GetStatus())
	}
	var pc *podContainer
	pod := sb.snapshot().GetPod() // not l.IsPod(): a pod taken over after a restart is one too
	switch {
	case pod && req.GetContainer() == "":
		return status.Errorf(codes.InvalidArgument, "container: sandbox %s is a pod: name the container to exec in", sb.snapshot().GetId())
	case !pod && req.GetContainer() != "":
		return status.Errorf(codes.InvalidArgument, "container: sandbox %s is not a pod", sb.snapshot().GetId())
	case pod:
		if _, pc, err = s.findContainer(req.GetId(), req.GetContainer()); err != nil {
			return err
		}
		sb.mu.Lock()
		c := pc.c
		sb.mu.Unlock()
		if c == nil {
			return status.Errorf(codes.FailedPrecondition, "container %s has not started", req.GetContainer())
		}
	}
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
		if pc != nil {
			code, err = l.ExecContainer(stream.Context(), pc.c, req.GetArgs(), stdout, stderr)
		} else {
			code, err = l.Sandbox().Exec(stream.Context(), req.GetArgs(), stdout, stderr)
		}
		done <- result{code, err}
	}()
	send := func(c *bulwarkv1.LogChunk) error {
		return stream.Send(&bulwarkv1.ExecEvent{Event: &bulwarkv1.ExecEvent_Output{Output: c}})
	}
	for {
		select {
		case c := <-out:
			if err := send(c); err != nil {
				return err
			}
		case r := <-done:
			for len(out) > 0 { // what came before the end
				if err := send(<-out); err != nil {
					return err
				}
			}
			if dropped.Load() {
				send(&bulwarkv1.LogChunk{Stream: bulwarkv1.LogChunk_STREAM_STDERR, Data: []byte("\n[bulwark: output dropped: the client read too slowly]\n")})
			}
			var ge *kvm.GuestError
			switch {
			case r.err == nil:
			case errors.As(r.err, &ge): // could not start: the reason on stderr, 126/127
				send(&bulwarkv1.LogChunk{Stream: bulwarkv1.LogChunk_STREAM_STDERR, Data: []byte(fmt.Sprintf("exec: %s\n", ge.Message))})
			case errors.Is(r.err, kvm.ErrExecLimit):
				return status.Error(codes.ResourceExhausted, r.err.Error())
			case stream.Context().Err() != nil:
				return status.FromContextError(stream.Context().Err()).Err()
			default:
				return status.Errorf(codes.Aborted, "exec: %v", r.err)
			}
			return stream.Send(&bulwarkv1.ExecEvent{Event: &bulwarkv1.ExecEvent_ExitCode{ExitCode: int32(r.code)}})
		}
	}
}
