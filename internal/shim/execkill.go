// Signals for exec'd processes (Kill with an ExecID).

package shim

import (
	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/kvm/channel"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	ptypes "github.com/containerd/containerd/protobuf/types"
)

// killExec sends r.Signal to an exec'd process's process group in the
// guest, on the ExecInteractive stream that started it; its end then
// arrives as its TaskExit, as any end does. As runc's shim: an unknown
// exec, or one that has finished, is NotFound (containerd's
// WithProcessKill then waits for its exit and deletes it), one not
// started is FailedPrecondition, and r.All changes nothing (an exec is
// one process group). Signal 0 only asks whether it still runs.
func (s *service) killExec(r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	if r.Signal > channel.MaxSignal {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "bulwark shim: exec %s: signal %d, want 1..%d", r.ExecID, r.Signal, channel.MaxSignal)
	}
	s.mu.Lock()
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	st, in := p.status, p.input
	s.mu.Unlock()
	switch {
	case st == tasktypes.Status_STOPPED:
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "bulwark shim: exec %s: process already finished", r.ExecID)
	case st != tasktypes.Status_RUNNING || in == nil:
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "bulwark shim: exec %s: process not started", r.ExecID)
	case r.Signal == 0:
		return empty, nil
	}
	// Not under s.mu: the stream may wait for flow control.
	if err := in.send(&bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Signal{Signal: r.Signal}}); err != nil {
		// The host service ended the call: the exec ended, and its exit
		// is on its way to Wait.
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "bulwark shim: exec %s: process already finished", r.ExecID)
	}
	return empty, nil
}
