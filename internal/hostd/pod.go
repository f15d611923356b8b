package hostd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/measure"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// containersDir holds a pod's container logs: sandboxes/ID/containers/NAME.log.
const containersDir = "containers"

// podContainer is one container of a pod VM the service runs.
type podContainer struct {
	log *outputLog
	c   *launch.Container // once started
	// killed: KillContainer signalled it (its END says stopped).
	killed bool
	// watched is closed when watchContainer has recorded its end (nil
	// while nothing watches it); removing: RemoveContainer runs.
	watched  chan struct{}
	removing bool
}

// containerStatuses of a pod's container (bulwarkv1.Container.status).
const (
	containerCreated = "created"
	containerRunning = "running"
	containerExited  = "exited"
	containerFailed  = "failed"
)

// startContainer runs one container of the pod sb (the first one with
// first: from the launch's own image), recording it in the sandbox's
// record, its output in its own log; it returns once the container runs
// or failed to start.
func (s *Service) startContainer(ctx context.Context, sb *sandbox, l *launch.Launched, co launch.ContainerOptions, first bool) (*bulwarkv1.Container, error) {
	id := sb.snapshot().GetId()
	dir := filepath.Join(sb.dir, containersDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, status.Errorf(codes.Internal, "container log: %v", err)
	}
	sb.mu.Lock()
	for _, c := range sb.info.GetContainers() {
		if c.GetName() == co.Name {
			sb.mu.Unlock()
			return nil, status.Errorf(codes.AlreadyExists, "name: pod %s has a container %q already", id, co.Name)
		}
	}
	log, err := createOutputLog(filepath.Join(dir, co.Name+".log"), s.cfg.LogLimit)
	if err != nil {
		sb.mu.Unlock()
		return nil, status.Errorf(codes.Internal, "container log: %v", err)
	}
	if sb.ctrs == nil {
		sb.ctrs = map[string]*podContainer{}
	}
	pc := &podContainer{log: log}
	sb.ctrs[co.Name] = pc
	sb.info.Containers = append(sb.info.Containers, &bulwarkv1.Container{Name: co.Name, Status: containerCreated, Image: co.Image, ExitCode: -1, Index: -1})
	sb.mu.Unlock()
	set := func(f func(*bulwarkv1.Container)) {
		sb.update(s.cfg.Logger, func(i *bulwarkv1.Sandbox) {
			for _, c := range i.Containers {
				if c.GetName() == co.Name {
					f(c)
				}
			}
		})
	}
	var c *launch.Container
	co.Stdout, co.Stderr = log.writer(streamStdout), log.writer(streamStderr)
	if first {
		c, err = l.StartFirstContainer(ctx, co)
	} else {
		co.EventID = func(eventID string) { set(func(i *bulwarkv1.Container) { i.EventId = eventID }) }
		c, err = l.AddContainer(ctx, co)
	}
	if err != nil {
		set(func(i *bulwarkv1.Container) { i.Status, i.Error = containerFailed, err.Error() })
		log.end()
		s.cfg.Logger.Warn("container not started", "sandbox", id, "container", co.Name, "err", err)
		if errors.Is(err, launch.ErrPodFull) {
			return nil, status.Errorf(codes.ResourceExhausted, "sandbox %s: %v", id, err)
		}
		return nil, launchStatus(id, err)
	}
	sb.mu.Lock()
	pc.c, pc.watched = c, make(chan struct{})
	sb.mu.Unlock()
	set(func(i *bulwarkv1.Container) {
		i.Status, i.Index, i.ImageDigest, i.EventId, i.AttestationId = containerRunning, int32(c.Index), c.ImageDigest, c.EventID, c.AttestationID
	})
	go s.watchContainer(sb, pc, co.Name, c)
	s.cfg.Logger.Info("container running", "sandbox", id, "container", co.Name, "index", c.Index)
	return s.containerInfo(sb, co.Name)
}

// containerEnded records the END of a pod's added container (its launch
// event, eventID) in the launch log once it ended (waitErr: Wait's), so
// that attestd never judges it alive again: stopped when KillContainer
// signalled it, else the pod's reason when the service is ending the pod
// (stopped, revoked: the container ended with it, even with an exit
// status of its own), else exited, or failed.
func (s *Service) containerEnded(sb *sandbox, pc *podContainer, eventID string, waitErr error) {
	sb.mu.Lock()
	reason := sb.ending
	switch {
	case pc.killed:
		reason = measure.EndStopped
	case reason != "":
	case waitErr == nil:
		reason = measure.EndExited
	default:
		reason = measure.EndFailed
	}
	sb.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), endTimeout)
	defer cancel()
	if _, err := launch.RecordEnd(ctx, s.cfg.TPM, s.cfg.StateDir, s.cfg.PCR, reason, eventID); err != nil {
		s.cfg.Logger.Error("recording the end of a container in the launch log", "sandbox", sb.snapshot().GetId(), "event", eventID, "err", err)
	}
}

// containerInfo is a copy of the record of container name of sb.
func (s *Service) containerInfo(sb *sandbox, name string) (*bulwarkv1.Container, error) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	for _, c := range sb.info.GetContainers() {
		if c.GetName() == name {
			return proto.Clone(c).(*bulwarkv1.Container), nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "name: pod %s has no container %q", sb.info.GetId(), trunc(name))
}

// findContainer returns the pod and its container named in a request.
func (s *Service) findContainer(id, name string) (*sandbox, *podContainer, error) {
	if err := checkContainerName(name); err != nil {
		return nil, nil, status.Errorf(codes.InvalidArgument, "name: %v", err)
	}
	sb, err := s.find(id)
	if err != nil {
		return nil, nil, err
	}
	sb.mu.Lock()
	pc := sb.ctrs[name]
	sb.mu.Unlock()
	if pc == nil {
		return nil, nil, status.Errorf(codes.NotFound, "name: pod %s has no container %q", sb.snapshot().GetId(), name)
	}
	return sb, pc, nil
}

// AddContainer adds a container to a running pod VM.
func (s *Service) AddContainer(ctx context.Context, req *bulwarkv1.AddContainerRequest) (*bulwarkv1.Container, error) {
	co, err := addContainerOptions(req)
	if err != nil {
		return nil, err
	}
	sb, err := s.find(req.GetId())
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	l := sb.launched
	sb.mu.Unlock()
	switch {
	case l == nil:
		info := sb.snapshot()
		return nil, status.Errorf(codes.FailedPrecondition, "sandbox %s is %s: containers are added to a running pod", info.GetId(), info.GetStatus())
	case sb.snapshot().GetPod() && !l.IsPod():
		return nil, status.Errorf(codes.FailedPrecondition, "pod %s was taken over after a restart of the host service without its launch state (%s in its directory, saved by a service of this version): its containers run on, but it takes no new one; start a new pod", sb.snapshot().GetId(), podStateFile)
	case !l.IsPod():
		return nil, status.Errorf(codes.FailedPrecondition, "sandbox %s is not a pod (run it with pod)", sb.snapshot().GetId())
	}
	return s.startContainer(ctx, sb, l, co, false)
}

// InspectContainer describes a container of a pod.
func (s *Service) InspectContainer(_ context.Context, req *bulwarkv1.ContainerRequest) (*bulwarkv1.Container, error) {
	sb, _, err := s.findContainer(req.GetId(), req.GetName())
	if err != nil {
		return nil, err
	}
	return s.containerInfo(sb, req.GetName())
}

// ContainerLogs streams a container's output.
func (s *Service) ContainerLogs(req *bulwarkv1.ContainerLogsRequest, stream bulwarkv1.Host_ContainerLogsServer) error {
	_, pc, err := s.findContainer(req.GetId(), req.GetName())
	if err != nil {
		return err
	}
	err = pc.log.follow(stream.Context(), req.GetFollow(), func(st byte, data []byte) error {
		return stream.Send(&bulwarkv1.LogChunk{Stream: bulwarkv1.LogChunk_Stream(st), Data: data})
	})
	if err != nil && stream.Context().Err() == nil {
		return status.Errorf(codes.Internal, "container %s: logs: %v", req.GetName(), err)
	}
	return nil
}

// KillContainer signals a container of a pod.
func (s *Service) KillContainer(_ context.Context, req *bulwarkv1.KillContainerRequest) (*bulwarkv1.Container, error) {
	sig := int(req.GetSignal())
	if sig == 0 {
		sig = 15
	}
	if sig < 1 || sig > 64 {
		return nil, status.Errorf(codes.InvalidArgument, "signal: %d: want 1..64", req.GetSignal())
	}
	sb, pc, err := s.findContainer(req.GetId(), req.GetName())
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	l, c := sb.launched, pc.c
	sb.mu.Unlock()
	if l == nil || c == nil {
		return s.containerInfo(sb, req.GetName())
	}
	select {
	case <-c.Done():
	default:
		sb.mu.Lock()
		pc.killed = true
		sb.mu.Unlock()
		if err := l.KillContainer(c, sig); err != nil {
			return nil, status.Errorf(codes.Aborted, "container %s: kill: %v", req.GetName(), err)
		}
	}
	return s.containerInfo(sb, req.GetName())
}

// firstContainer starts a pod's first container right after its launch;
// on failure the pod is stopped, and firstContainer returns once it has
// ended and its record says failed: the caller (the shim) then removes
// the record of the failed launch, which it would not while it runs.
func (s *Service) firstContainer(ctx context.Context, sb *sandbox, l *launch.Launched, co launch.ContainerOptions) error {
	co.Image = sb.snapshot().GetImage()
	_, err := s.startContainer(ctx, sb, l, co, true)
	if err != nil {
		const why = "its first container did not start"
		sb.update(s.cfg.Logger, func(i *bulwarkv1.Sandbox) { i.Error = why })
		if serr := l.Sandbox().Stop(time.Second); serr != nil {
			l.Sandbox().Abort(why)
		}
		t := time.NewTimer(time.Second + stopMargin)
		defer t.Stop()
		select {
		case <-sb.done:
		case <-t.C:
			l.Sandbox().Abort(why)
			<-sb.done
		}
		sb.update(s.cfg.Logger, func(i *bulwarkv1.Sandbox) { i.Status, i.Error = StatusFailed, why })
		return err
	}
	return nil
}
