package agent

import (
	"slices"
	"sync"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// hostLink tracks the host end of the channel while the workload runs. When
// the host process dies (a host service killed or crashed), reads of the
// port end: the link is lost, and every frame waits — instead of reaching
// whatever connects next before it knows where the stream stands — until a
// new host process sends REATTACH. The agent then answers REATTACHED and
// STATUS before anything else (channel.Reattach).
type hostLink struct {
	mu       sync.Mutex
	down     bool
	up       chan struct{} // closed when the link is back (nil while up)
	exited   bool          // EXIT was written
	exitCode int
	// ctrs is, for a pod, each container whose CONTAINER_STARTED was
	// written without an error: its exit code once its CONTAINER_EXIT
	// was written, -1 before.
	ctrs map[int]int
}

// wait returns once the host end is connected.
func (l *hostLink) wait() {
	l.mu.Lock()
	up := l.up
	l.mu.Unlock()
	if up != nil {
		<-up
	}
}

func (l *hostLink) lost() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.down {
		l.down, l.up = true, make(chan struct{})
	}
}

// written notes a frame written to the host that STATUS reports on: the
// workload's EXIT, a container's CONTAINER_STARTED and CONTAINER_EXIT.
// The session's write lock is held, as in reattached: STATUS says exactly
// what was written before it.
func (l *hostLink) written(t channel.Type, v any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch t {
	case channel.TypeExit:
		l.exited, l.exitCode = true, v.(channel.Exit).Code
	case channel.TypeContainerStarted:
		if st := v.(channel.ContainerStarted); st.Error == "" {
			if l.ctrs == nil {
				l.ctrs = map[int]int{}
			}
			l.ctrs[st.Index] = -1
		}
	case channel.TypeContainerExit:
		e := v.(channel.ContainerExit)
		if _, ok := l.ctrs[e.Index]; ok {
			l.ctrs[e.Index] = e.Code
		}
	case channel.TypeContainerRemoved:
		if r := v.(channel.ContainerRemoved); r.Error == "" {
			delete(l.ctrs, r.Index)
		}
	}
}

// status is what STATUS says (l.mu held); pod: the sandbox is a pod.
func (l *hostLink) status(pod bool) channel.Status {
	st := channel.Status{State: "running", Pod: pod, Version: channel.Version}
	if l.exited {
		st = channel.Status{State: "exited", Code: l.exitCode, Pod: pod, Version: channel.Version}
	}
	for i, code := range l.ctrs {
		c := channel.ContainerStatus{Index: i, State: "running"}
		if code >= 0 {
			c.State, c.Code = "exited", code
		}
		st.Containers = append(st.Containers, c)
	}
	slices.SortFunc(st.Containers, func(a, b channel.ContainerStatus) int { return a.Index - b.Index })
	return st
}

// reattached answers a new host process: REATTACHED with its nonce, then
// STATUS, written under the write lock (so after any frame in flight, and
// before any other), then lets the held frames go.
func (s *session) reattached(r *channel.Reattach) {
	s.wmu.Lock()
	s.link.mu.Lock()
	st := s.link.status(s.pod != nil)
	s.link.mu.Unlock()
	err := channel.WriteJSON(s.port, channel.TypeReattached, r)
	if err == nil {
		err = channel.WriteJSON(s.port, channel.TypeStatus, st)
	}
	s.wmu.Unlock()
	if err != nil {
		s.log.Error("answering REATTACH", "err", err)
		return
	}
	s.log.Info("a new host process reattached", "workload", st.State, "containers", len(st.Containers))
	s.link.mu.Lock()
	if s.link.down {
		close(s.link.up)
		s.link.down, s.link.up = false, nil
	}
	s.link.mu.Unlock()
}
