package kvm

import (
	"errors"
	"fmt"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// A pod taken over by Reattach: its agent's STATUS lists the containers
// it started and the exit code of those that ended (channel.Status), and
// the new host process goes on from there — their output, exits, kills
// and execs — as the one that started them did. The image slots are
// QEMU's (podslot.go): a slot whose container the agent reports is
// filled, the others are free for new containers.

// errNotPodAgent refuses a pod whose agent does not report its containers.
var errNotPodAgent = errors.New("STATUS of a pod without its containers: the guest agent predates the takeover of pods")

// adoptContainers applies a valid STATUS's containers (Reattach; s.mu is
// held): each becomes a Container of the pod, running or, with its exit
// code, exited, its output going where cfg.ContainerOutput says.
func (s *Sandbox) adoptContainers(st *channel.Status) error {
	if !s.cfg.Pod {
		if st.Pod {
			return errors.New("STATUS of a pod from a sandbox that is not one")
		}
		return nil
	}
	if !st.Pod {
		return errNotPodAgent
	}
	s.pod.containers = map[int]*Container{}
	s.pod.filled = nil
	for _, cs := range st.Containers {
		if cs.Index > 0 {
			if s.pod.filled == nil {
				s.pod.filled = make([]bool, channel.MaxContainers)
			}
			s.pod.filled[cs.Index] = true
		}
		c := &Container{index: cs.Index, started: make(chan channel.ContainerStarted, 1), seen: true, done: make(chan struct{}), code: -1}
		if s.cfg.ContainerOutput != nil {
			c.stdout, c.stderr = s.cfg.ContainerOutput(cs.Index)
		}
		if cs.State == "exited" {
			c.code = cs.Code
			close(c.done)
		}
		s.pod.containers[cs.Index] = c
	}
	return nil
}

// PodContainer returns container index of a pod that Reattach took over
// (or that StartContainer started), to wait for, kill or exec in.
func (s *Sandbox) PodContainer(index int) (*Container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.pod.containers[index]
	if c == nil || !c.seen {
		return nil, fmt.Errorf("kvm: the pod has no container %d", index)
	}
	return c, nil
}

// PodContainers lists the indexes of the pod's containers the agent
// started (running or exited).
func (s *Sandbox) PodContainers() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for i, c := range s.pod.containers {
		if c.seen {
			out = append(out, i)
		}
	}
	return out
}
