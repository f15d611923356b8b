package shim

import (
	"context"
	"errors"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
)

// endedStream is the client side of an ExecInteractive call the host
// service has ended: every Send fails as gRPC's does then.
type endedStream struct {
	bulwarkv1.Host_ExecInteractiveClient
}

func (endedStream) Send(*bulwarkv1.ExecInput) error { return errors.New("EOF") }

// Kill with an ExecID signals the exec on the stream that started it,
// and answers as runc's shim does where it cannot: NotFound for an
// unknown exec and for one that finished (containerd's WithProcessKill
// then waits for its exit), FailedPrecondition for one not started,
// InvalidArgument past signal 64, NotFound when the host service already
// ended the exec. Signal 0 sends nothing. Delete of a running exec is
// refused; a finished one is deleted once. Before, every Kill with an
// ExecID was NotImplemented.
func TestKillExec(t *testing.T) {
	running := &recordingStream{}
	mk := func(st tasktypes.Status, in *execInput) *proc {
		p := &proc{status: st, exited: make(chan struct{}), input: in}
		if st == tasktypes.Status_STOPPED {
			p.exit(137)
		}
		return p
	}
	s := &service{ctx: context.Background(), events: make(chan any, 16), containers: map[string]*container{
		"c": {task: &proc{status: tasktypes.Status_RUNNING, exited: make(chan struct{})}, execs: map[string]*proc{
			"run":     mk(tasktypes.Status_RUNNING, &execInput{out: running.Send}),
			"created": mk(tasktypes.Status_CREATED, nil),
			"done":    mk(tasktypes.Status_STOPPED, &execInput{out: endedStream{}.Send}),
			"ended":   mk(tasktypes.Status_RUNNING, &execInput{out: endedStream{}.Send}),
		}},
	}}
	ctx := context.Background()
	for _, tc := range []struct {
		id, exec string
		sig      uint32
		want     error // nil: accepted
	}{
		{"c", "run", 9, nil},
		{"c", "run", 0, nil}, // only asks whether it runs
		{"c", "run", 64, nil},
		{"c", "run", 65, errdefs.ErrInvalidArgument},
		{"c", "nope", 9, errdefs.ErrNotFound},
		{"x", "run", 9, errdefs.ErrNotFound},
		{"c", "created", 9, errdefs.ErrFailedPrecondition},
		{"c", "done", 9, errdefs.ErrNotFound},
		{"c", "ended", 15, errdefs.ErrNotFound},
	} {
		_, err := s.Kill(ctx, &taskAPI.KillRequest{ID: tc.id, ExecID: tc.exec, Signal: tc.sig, All: true})
		err = errdefs.FromGRPC(err)
		if (tc.want == nil) != (err == nil) || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("Kill %s/%s signal %d: %v, want %v", tc.id, tc.exec, tc.sig, err, tc.want)
		}
	}
	var got []uint32
	for _, m := range running.sent {
		got = append(got, m.GetSignal())
	}
	if len(got) != 2 || got[0] != 9 || got[1] != 64 {
		t.Fatalf("sent signals %v, want [9 64]", got)
	}

	// A resize for an exec without a terminal (now on a stream too) is
	// refused and sends nothing: the host service would end the exec's
	// call for it.
	if _, err := s.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "c", ExecID: "run", Width: 80, Height: 24}); err == nil || len(running.sent) != 2 {
		t.Fatalf("ResizePty of an exec without a terminal: %v, %d messages sent", err, len(running.sent))
	}

	// Delete: a running exec is refused, a finished one goes once.
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c", ExecID: "run"}); !errdefs.IsFailedPrecondition(errdefs.FromGRPC(err)) {
		t.Errorf("Delete of a running exec: %v, want FailedPrecondition", err)
	}
	if r, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c", ExecID: "done"}); err != nil || r.ExitStatus != 137 {
		t.Errorf("Delete of a finished exec: %v, %v", r, err)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c", ExecID: "done"}); !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		t.Errorf("second Delete of an exec: %v, want NotFound", err)
	}
}
