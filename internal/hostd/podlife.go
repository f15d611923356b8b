package hostd

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"slices"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/measure"
)

// A pod's containers over the pod's life: each one's end (watchContainer),
// the takeover of a pod VM by a restarted service (podTakeover), and the
// containers of a pod that ended while no service watched it.

// setContainer changes the record of container name of sb and saves it.
func (s *Service) setContainer(sb *sandbox, name string, f func(*bulwarkv1.Container)) {
	sb.update(s.cfg.Logger, func(i *bulwarkv1.Sandbox) {
		for _, c := range i.Containers {
			if c.GetName() == name {
				f(c)
			}
		}
	})
}

// watchContainer waits for a running container of pod sb to end and
// records how: its exit code, and why when it ended with the pod (revoked,
// stopped); an added container's launch event gets its END record, and
// attestd is told at the next re-attestation that it no longer runs.
func (s *Service) watchContainer(sb *sandbox, pc *podContainer, name string, c *launch.Container) {
	defer close(pc.watched)
	code, err := c.Wait(context.Background())
	sb.mu.Lock()
	ending, revoked := sb.ending, sb.info.GetRevoked()
	sb.mu.Unlock()
	msg := ""
	switch {
	case ending == measure.EndRevoked: // it ended with its pod, revoked
		msg = "the pod was revoked by attestd"
		if revoked != "" {
			msg += ": " + revoked
		}
	case err != nil && ending == measure.EndStopped:
		msg = "the pod was stopped while the container ran"
	case err != nil:
		msg = err.Error()
	}
	s.setContainer(sb, name, func(i *bulwarkv1.Container) {
		i.ExitCode, i.Error = int32(code), msg
		if err != nil {
			i.Status = containerFailed
		} else {
			i.Status = containerExited
		}
	})
	if c.Index != 0 { // the first container's event is the pod's: its END is the pod's
		s.containerEnded(sb, pc, c.EventID, err)
		s.sandboxEnded(c.EventID)
	}
	pc.log.end()
	s.cfg.Logger.Info("container ended", "sandbox", sb.snapshot().GetId(), "container", name, "exit_code", code)
}

// endContainers marks the containers of a pod that no longer runs (why:
// how it ended) that its record still says run as failed, and gives sb
// their logs, so that they can be inspected and read like any ended one.
func endContainers(sb *sandbox, why string) {
	sb.ctrs = map[string]*podContainer{}
	for _, c := range sb.info.GetContainers() {
		if c.GetStatus() == containerRunning || c.GetStatus() == containerCreated {
			c.Status, c.Error = containerFailed, "its pod VM ended: "+why
		}
		sb.ctrs[c.GetName()] = &podContainer{log: endedOutputLog(filepath.Join(sb.dir, containersDir, c.GetName()+".log"))}
	}
}

// podTakeover is what a restarted service needs to take over a pod VM:
// the logs of the containers its record says run, by slot index.
type podTakeover struct {
	ctrs    map[string]*podContainer
	byIndex map[int]*bulwarkv1.Container
}

// newPodTakeover opens the logs of pod r's containers (in its directory
// dir): for appending those of the running ones, ended the others'.
func newPodTakeover(dir string, r *bulwarkv1.Sandbox, limit int64) (*podTakeover, error) {
	p := &podTakeover{ctrs: map[string]*podContainer{}, byIndex: map[int]*bulwarkv1.Container{}}
	for _, c := range r.GetContainers() {
		path := filepath.Join(dir, containersDir, c.GetName()+".log")
		if c.GetStatus() != containerRunning || c.GetIndex() < 0 {
			p.ctrs[c.GetName()] = &podContainer{log: endedOutputLog(path)}
			continue
		}
		l, err := createOutputLog(path, limit)
		if err != nil {
			p.end()
			return nil, err
		}
		p.ctrs[c.GetName()] = &podContainer{log: l}
		p.byIndex[int(c.GetIndex())] = c
	}
	return p, nil
}

// output is kvm.Config.ContainerOutput: a running container's log, or
// nothing for one the record does not know.
func (p *podTakeover) output(index int) (io.Writer, io.Writer) {
	c := p.byIndex[index]
	if c == nil {
		return nil, nil
	}
	l := p.ctrs[c.GetName()].log
	return l.writer(streamStdout), l.writer(streamStderr)
}

// end closes every log (the takeover failed).
func (p *podTakeover) end() {
	for _, pc := range p.ctrs {
		pc.log.end()
	}
}

// adopt goes on with the pod's containers once its VM is taken over (l):
// each one its record says runs is followed again (its exit code, if it
// ended while no service watched, came with the takeover); one the guest
// does not know, or that was starting when the previous service stopped,
// failed; a container the guest runs that the record does not know is
// killed (nothing of the host's vouches for it).
func (s *Service) adopt(sb *sandbox, l *launch.Launched, p *podTakeover) {
	id := sb.snapshot().GetId()
	sb.mu.Lock()
	sb.ctrs = p.ctrs
	recs := slices.Clone(sb.info.GetContainers())
	sb.mu.Unlock()
	for _, rc := range recs {
		name, pc := rc.GetName(), p.ctrs[rc.GetName()]
		switch rc.GetStatus() {
		case containerCreated:
			s.setContainer(sb, name, func(i *bulwarkv1.Container) {
				i.Status, i.Error = containerFailed, "the host service stopped while the container started"
			})
			// Its launch event may be in the log (recorded before the
			// service stopped): it gets its END, so that attestd never
			// judges it alive.
			if id := rc.GetEventId(); id != "" && id != sb.snapshot().GetId() {
				s.containerEnded(sb, pc, id, errors.New("not started"))
			}
			continue
		case containerRunning:
		default:
			continue
		}
		c, err := l.AdoptContainer(int(rc.GetIndex()), rc.GetEventId(), rc.GetAttestationId(), rc.GetImageDigest())
		if err != nil {
			s.setContainer(sb, name, func(i *bulwarkv1.Container) {
				i.Status, i.Error = containerFailed, "not found in the pod's guest after a restart of the host service"
			})
			pc.log.end()
			if rc.GetIndex() != 0 {
				s.containerEnded(sb, pc, rc.GetEventId(), err)
			}
			s.cfg.Logger.Warn("container of a pod taken over not found in its guest", "sandbox", id, "container", name, "err", err)
			continue
		}
		sb.mu.Lock()
		pc.c, pc.watched = c, make(chan struct{})
		sb.mu.Unlock()
		go s.watchContainer(sb, pc, name, c)
	}
	for _, i := range l.Sandbox().PodContainers() {
		if p.byIndex[i] != nil {
			continue
		}
		if c, err := l.Sandbox().PodContainer(i); err == nil {
			select {
			case <-c.Done():
				continue
			default:
			}
		}
		s.cfg.Logger.Warn("a container the pod's record does not know runs in its guest; it is killed", "sandbox", id, "index", i)
		if err := l.Sandbox().KillContainer(i, 9); err != nil {
			s.cfg.Logger.Error("killing an unknown container of a pod taken over", "sandbox", id, "index", i, "err", err)
		}
	}
}
