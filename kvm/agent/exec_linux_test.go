package agent

import (
	"os"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// The agent runs at most channel.MaxExecs execs at once, and an exec whose
// process the reaper saw exit before it was registered still gets its code.
func TestExecsLimitAndEarlyExit(t *testing.T) {
	var e execs
	self := func() (*os.Process, error) { return os.FindProcess(os.Getpid()) }
	e.running = channel.MaxExecs
	started := false
	if _, _, err := e.start(nil, func() (*os.Process, error) { started = true; return self() }); err == nil || !strings.Contains(err.Error(), "the limit") || started {
		t.Fatalf("start past the limit: %v (started %v)", err, started)
	}
	e.running = 0
	e.reaped(os.Getpid(), 7) // reaped before the exec registers its pid
	_, ch, err := e.start(nil, self)
	if err != nil {
		t.Fatal(err)
	}
	if code := <-ch; code != 7 {
		t.Fatalf("early exit code %d, want 7", code)
	}
	// A registered exec gets the code the reaper hands over.
	proc, ch, err := e.start(nil, self)
	if err != nil {
		t.Fatal(err)
	}
	e.reaped(proc.Pid, 3)
	if code := <-ch; code != 3 {
		t.Fatalf("exit code %d, want 3", code)
	}
}
