package agent

import (
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

func (l *hostLink) exitSent(code int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.exited, l.exitCode = true, code
}

// reattached answers a new host process: REATTACHED with its nonce, then
// STATUS, written under the write lock (so after any frame in flight, and
// before any other), then lets the held frames go.
func (s *session) reattached(r *channel.Reattach) {
	s.wmu.Lock()
	s.link.mu.Lock()
	st := channel.Status{State: "running"}
	if s.link.exited {
		st = channel.Status{State: "exited", Code: s.link.exitCode}
	}
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
	s.log.Info("a new host process reattached", "workload", st.State)
	s.link.mu.Lock()
	if s.link.down {
		close(s.link.up)
		s.link.down, s.link.up = false, nil
	}
	s.link.mu.Unlock()
}
