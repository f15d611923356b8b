// A CRI pod in one VM: its first application container boots the pod's
// sandbox, later ones join it (AddContainer).

package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/log"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// startInPod starts a container of a pod VM: the first one launches the
// pod's VM with its image (the host service's Run with pod: verify,
// measure, boot, attest, release the pod's secrets, start it), the later
// ones are added to it (AddContainer: measured, a launch event of their
// own judged by the pod's policy, then started). A refusal fails Start
// with the policy's reasons, and nothing of the container runs.
func (s *service) startInPod(ctx context.Context, c *container) (*taskAPI.StartResponse, error) {
	p := c.pod
	p.podMu.Lock()
	defer p.podMu.Unlock()
	s.mu.Lock()
	t := c.task
	if t.status != tasktypes.Status_CREATED || t.cancel != nil {
		s.mu.Unlock()
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "bulwark shim: container %s already started", t.id)
	}
	if p.task.status == tasktypes.Status_STOPPED {
		s.mu.Unlock()
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "bulwark shim: container %s: its pod is stopped", t.id)
	}
	podID, podPolicy, first := p.sandbox, p.cfg.Policy, p.sandbox == ""
	lctx, cancel := context.WithCancel(ctx)
	t.cancel = cancel
	if first { // stopping the pod aborts its launch
		p.task.cancel = cancel
	}
	image := filepath.Join(c.bundle, imageDirName, "image")
	args := workloadArgs(c.cfg.Args, c.image.Config.Entrypoint, c.image.Config.Cmd)
	netns := p.netns
	stdin, tty := taskStdio(t)
	s.mu.Unlock()
	defer cancel()

	var (
		qemuPid uint32
		err     error
	)
	if first {
		req := &bulwarkv1.RunRequest{
			Policy: c.cfg.Policy, Image: image, Args: args, Kernel: c.cfg.Kernel, Initrd: c.cfg.Initrd, Template: c.cfg.Template,
			Env: c.cfg.Env, WorkingDir: c.cfg.WorkingDir, User: c.cfg.User,
			Pod: true, Container: t.id, ContainerStdin: stdin, ContainerTty: tty,
		}
		if netns != "" { // a pod with its own network: the guest takes its interface over
			req.Network, req.Netns = "tap", netns
		}
		var sb *bulwarkv1.Sandbox
		if sb, err = s.launch(lctx, req); err != nil {
			s.forgetFailed(image)
		} else {
			podID, qemuPid = sb.GetId(), uint32(max(sb.GetQemuPid(), 0))
		}
	} else if c.cfg.Policy != podPolicy {
		err = fmt.Errorf("bulwark shim: container %s names policy %q, its pod VM runs under %q: a pod's containers are judged by its policy", t.id, c.cfg.Policy, podPolicy)
	} else {
		err = addContainer(lctx, &bulwarkv1.AddContainerRequest{Id: podID, Name: t.id, Image: image, Args: args,
			Env: c.cfg.Env, WorkingDir: c.cfg.WorkingDir, User: c.cfg.User, Stdin: stdin, Tty: tty})
	}
	// The host service has built the image's disk (or failed): the copy
	// is no longer needed.
	os.RemoveAll(filepath.Join(c.bundle, imageDirName))
	s.mu.Lock()
	defer s.mu.Unlock()
	t.cancel = nil
	if first {
		p.task.cancel = nil
		if err == nil {
			p.sandbox, p.cfg, p.qemuPid = podID, c.cfg, qemuPid
			if werr := os.WriteFile(filepath.Join(p.bundle, sandboxFile), []byte(podID), 0o600); werr != nil {
				log.G(ctx).WithError(werr).Warn("bulwark shim: recording the pod's sandbox id")
			}
			if p.task.status == tasktypes.Status_STOPPED { // the pod was stopped while it launched (its Delete removes it)
				go s.stopSandbox(podID, syscall.SIGKILL)
				err = fmt.Errorf("bulwark shim: pod %s was stopped while its VM launched", p.task.id)
			} else {
				stdout, stderr := openOutputs(s.ctx, p.task.stdout, p.task.stderr)
				go s.follow(p.task, podID, "", stdout, stderr) // the pause task ends with the pod's VM
			}
		}
	}
	if err != nil {
		if t.exit(exitLaunchFailed) {
			s.send(&eventstypes.TaskExit{ContainerID: t.id, ID: t.id, Pid: t.pid, ExitStatus: t.exitStatus, ExitedAt: protobuf.ToTimestamp(t.exitedAt)})
		}
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "%v", err)
	}
	c.sandbox = podID
	if p.qemuPid > 0 {
		t.pid = p.qemuPid
	}
	if t.status == tasktypes.Status_STOPPED { // killed while it started
		go s.killContainer(podID, t.id, syscall.SIGKILL)
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "bulwark shim: container %s was killed while it started", t.id)
	}
	t.status = tasktypes.Status_RUNNING
	if err := s.startTaskInput(t, podID, tty); err != nil {
		logTaskInput(ctx, err)
	}
	log.G(ctx).Infof("bulwark shim: container %s runs in pod VM %s", t.id, podID)
	s.send(&eventstypes.TaskStart{ContainerID: t.id, Pid: t.pid})
	stdout, stderr := openOutputs(s.ctx, t.stdout, t.stderr)
	go s.follow(t, podID, t.id, stdout, stderr)
	return &taskAPI.StartResponse{Pid: t.pid}, nil
}

// addContainer adds a container to a running pod VM; a failure carries
// the host service's reasons.
func addContainer(ctx context.Context, req *bulwarkv1.AddContainerRequest) error {
	c, err := dialHost()
	if err != nil {
		return fmt.Errorf("bulwark shim: %w", err)
	}
	defer c.Close()
	if _, err := c.AddContainer(ctx, req); err != nil {
		return fmt.Errorf("bulwark launch: %s", status.Convert(err).Message())
	}
	return nil
}

// removeTimeout bounds the removal of a container from its pod VM.
const removeTimeout = 30 * time.Second

// removeFromPod has the host service forget container name of pod id
// (its record, log and image slot); a pod or container it no longer
// knows is not an error.
func removeFromPod(ctx context.Context, id, name string) error {
	c, err := dialHost()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, removeTimeout)
	defer cancel()
	if _, err := c.RemoveContainer(ctx, &bulwarkv1.ContainerRequest{Id: id, Name: name}); err != nil && status.Code(err) != codes.NotFound {
		return err
	}
	return nil
}
