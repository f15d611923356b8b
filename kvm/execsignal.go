package kvm

import (
	"time"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// signalExec sends the signals sigs delivers as EXEC_SIGNAL frames for
// exec id until the exec ended; an invalid signal is skipped.
func (s *Sandbox) signalExec(id uint32, sigs <-chan int, ended <-chan struct{}) {
	for {
		select {
		case <-ended:
			return
		case sig, ok := <-sigs:
			if !ok {
				return
			}
			m := channel.ExecSignal{ID: id, Signal: sig}
			if err := m.Validate(); err != nil {
				s.log.Warn("exec signal", "exec", id, "err", err)
				continue
			}
			if err := s.write(channel.TypeExecSignal, m, 2*time.Second); err != nil {
				s.log.Debug("exec signal", "exec", id, "err", err)
				return
			}
		}
	}
}
