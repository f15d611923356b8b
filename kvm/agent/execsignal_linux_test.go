package agent

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// startSleeper starts a real sleep leading a session of its own, as
// runExec starts a command, through e.start for target t.
func startSleeper(t *testing.T, e *execs, target *execTarget) (*os.Process, chan int) {
	t.Helper()
	path, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep on this host")
	}
	proc, ch, err := e.start(target, func() (*os.Process, error) {
		return os.StartProcess(path, []string{"sleep", "600"}, &os.ProcAttr{Sys: &syscall.SysProcAttr{Setsid: true}})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.Kill(); _, _ = proc.Wait() })
	return proc, ch
}

// reap waits for proc as the agent's reaper does and hands its code over.
func reap(t *testing.T, e *execs, proc *os.Process) {
	t.Helper()
	st, err := proc.Wait()
	if err != nil {
		t.Fatal(err)
	}
	ws := st.Sys().(syscall.WaitStatus)
	e.reaped(proc.Pid, ExitCode(ws.Exited(), ws.ExitStatus(), ws.Signaled(), int(ws.Signal())))
}

// EXEC_SIGNAL reaches a running exec's process group (a real sleep ends
// with 128+15); a signal that arrives while its command is being started
// is held and delivered once it runs; signals for an exec id the agent
// never read, or whose command was reaped, are dropped.
func TestExecSignal(t *testing.T) {
	var e execs
	if e.signal(5, syscall.SIGTERM) {
		t.Fatal("a signal for an unknown exec was taken")
	}

	// Running: the signal goes to its group.
	target := e.expect(1)
	proc, ch := startSleeper(t, &e, target)
	if !e.signal(1, syscall.SIGTERM) {
		t.Fatal("a signal for a running exec was dropped")
	}
	reap(t, &e, proc)
	if code := <-ch; code != 128+int(syscall.SIGTERM) {
		t.Fatalf("exit code %d, want 143", code)
	}
	// Reaped: its pid is no longer its; nothing is sent.
	if e.signal(1, syscall.SIGKILL) {
		t.Fatal("a signal for a reaped exec was taken")
	}
	e.forget(1, target)

	// Before its command exists: held, then delivered at start.
	target = e.expect(2)
	if !e.signal(2, syscall.SIGINT) {
		t.Fatal("a signal for an exec being started was dropped")
	}
	proc, ch = startSleeper(t, &e, target)
	reap(t, &e, proc)
	if code := <-ch; code != 128+int(syscall.SIGINT) {
		t.Fatalf("held signal: exit code %d, want 130", code)
	}
	e.forget(2, target)
	if e.signal(2, syscall.SIGTERM) {
		t.Fatal("a signal for a forgotten exec was taken")
	}

	// At most maxPendingSignals are held.
	target = e.expect(3)
	for i := range maxPendingSignals + 1 {
		if got := e.signal(3, syscall.SIGCONT); got != (i < maxPendingSignals) {
			t.Fatalf("pending signal %d taken=%v", i, got)
		}
	}
	// A host reusing an id means its new exec: the old target is replaced
	// and forgetting the old one leaves the new one.
	newer := e.expect(3)
	e.forget(3, target)
	if !e.signal(3, syscall.SIGCONT) || len(newer.pending) != 1 {
		t.Fatalf("the new exec 3 lost its signal: %+v", newer)
	}
}
