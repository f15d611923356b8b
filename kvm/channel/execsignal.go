package channel

import "fmt"

// TypeExecSignal is a host frame: JSON ExecSignal, send a signal to an
// exec's process group.
const TypeExecSignal Type = 27

// ExecSignal sends Signal (1..64) to the process group of exec ID (the
// command leads a session of its own, so what it started gets it too).
// The exec's end comes back as its EXEC_EXIT, as for any end. A signal
// for an exec the agent does not know, or whose command has exited, is
// dropped, as EXEC_STDIN and EXEC_RESIZE are; one that arrives while the
// command is being started is delivered once it exists.
type ExecSignal struct {
	ID     uint32 `json:"id"`
	Signal int    `json:"signal"`
}

// MaxSignal is the highest signal number ExecSignal and ContainerKill
// carry (Linux's SIGRTMAX).
const MaxSignal = 64

// Validate checks an ExecSignal: an exec id other than 0 and a signal of
// 1..MaxSignal.
func (s *ExecSignal) Validate() error {
	if s.ID == 0 {
		return fmt.Errorf("channel: EXEC_SIGNAL for exec 0")
	}
	if s.Signal < 1 || s.Signal > MaxSignal {
		return fmt.Errorf("channel: EXEC_SIGNAL signal %d, want 1..%d", s.Signal, MaxSignal)
	}
	return nil
}
