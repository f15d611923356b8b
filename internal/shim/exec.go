// Processes run beside a container's workload (ctr tasks exec, crictl exec).

package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/protobuf"
	ptypes "github.com/containerd/containerd/protobuf/types"
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
	if r.Terminal {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotImplemented, "bulwark shim: exec %s: terminal: %v", r.ExecID, errTerminal)
	}
	var ps specs.Process
	if r.Spec == nil || json.Unmarshal(r.Spec.GetValue(), &ps) != nil || len(ps.Args) == 0 {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "bulwark shim: exec %s: want a process spec with a command", r.ExecID)
	}
	c.execs[r.ExecID] = &proc{id: r.ExecID, stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, status: tasktypes.Status_CREATED,
		exited: make(chan struct{}), args: ps.Args}
	s.send(&eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return empty, nil
}

// startExec runs an exec'd process through the host service (its stdin
// is /dev/null there).
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
	stream, err := hc.Exec(ectx, req)
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
