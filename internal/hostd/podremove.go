package hostd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RemoveContainer forgets a container of a pod that ended or failed to
// start: in the pod's guest (what is left in its root is killed, its
// root unmounted, its image slot emptied and freed for the next
// container), then its record and log. The shim calls it when containerd
// deletes the container's task (the CRI does as soon as it exits), so
// that a pod whose containers the kubelet restarts never runs out of
// slots.
func (s *Service) RemoveContainer(ctx context.Context, req *bulwarkv1.ContainerRequest) (*bulwarkv1.RemoveContainerResponse, error) {
	sb, pc, err := s.findContainer(req.GetId(), req.GetName())
	if err != nil {
		return nil, err
	}
	name := req.GetName()
	info, err := s.containerInfo(sb, name)
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	switch {
	case pc.removing:
		sb.mu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "name: container %s of pod %s is being removed", name, sb.info.GetId())
	case info.GetStatus() == containerRunning || info.GetStatus() == containerCreated:
		sb.mu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "name: container %s of pod %s is %s: kill it first", name, sb.info.GetId(), info.GetStatus())
	}
	pc.removing = true
	l, c, watched := sb.launched, pc.c, pc.watched
	sb.mu.Unlock()
	defer func() {
		sb.mu.Lock()
		pc.removing = false
		sb.mu.Unlock()
	}()
	if watched != nil { // its end is recorded (END in the launch log) before it goes
		select {
		case <-watched:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if l != nil && l.IsPod() && c != nil {
		if err := l.RemoveContainer(ctx, c); err != nil {
			select {
			case <-sb.done: // the pod ended meanwhile: nothing of it is left in a guest
			default:
				return nil, status.Errorf(codes.Aborted, "container %s of pod %s: removing it from the pod's guest: %v; try again", name, sb.snapshot().GetId(), err)
			}
		}
	}
	sb.mu.Lock()
	delete(sb.ctrs, name)
	sb.mu.Unlock()
	sb.update(s.cfg.Logger, func(i *bulwarkv1.Sandbox) {
		i.Containers = slices.DeleteFunc(i.Containers, func(c *bulwarkv1.Container) bool { return c.GetName() == name })
	})
	pc.log.end()
	if err := os.Remove(filepath.Join(sb.dir, containersDir, name+".log")); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.cfg.Logger.Warn("removing a container's log", "sandbox", sb.snapshot().GetId(), "container", name, "err", err)
	}
	s.cfg.Logger.Info("container removed", "sandbox", sb.snapshot().GetId(), "container", name)
	return &bulwarkv1.RemoveContainerResponse{}, nil
}
