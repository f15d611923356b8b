package agent

import "syscall"

// maxPendingSignals bounds the signals held for one exec whose command is
// still being started; past it, further ones are dropped.
const maxPendingSignals = 8

// execTarget is where the host's EXEC_SIGNAL frames for one exec go: its
// command's process group (the command leads a session of its own) once
// it started, signals held until then; none once its command was reaped
// (its pid may then be another process's). Guarded by execs.mu.
type execTarget struct {
	pid     int // 0 until the command started
	pending []syscall.Signal
	exited  bool
}

// expect notes exec id, whose EXEC was just read, as the target of the
// signals that follow it, replacing an exec of the same id (a host that
// reuses an id means its new exec). watchHost calls it as it reads the
// EXEC, before the command starts, so that no signal sent right behind
// the EXEC is lost; runExec forgets it.
func (e *execs) expect(id uint32) *execTarget {
	t := &execTarget{}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.targets == nil {
		e.targets = map[uint32]*execTarget{}
	}
	e.targets[id] = t
	return t
}

// forget drops exec id's target, if it is still t.
func (e *execs) forget(id uint32, t *execTarget) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.targets[id] == t {
		delete(e.targets, id)
	}
}

// signal applies an EXEC_SIGNAL: sig goes to exec id's process group, or
// is held until its command started. It reports whether it was taken: a
// signal for an exec the agent does not know, or whose command was
// reaped, is dropped.
func (e *execs) signal(id uint32, sig syscall.Signal) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.targets[id]
	switch {
	case t == nil || t.exited:
		return false
	case t.pid == 0:
		if len(t.pending) >= maxPendingSignals {
			return false
		}
		t.pending = append(t.pending, sig)
		return true
	}
	// Under e.mu the reaper cannot have reaped the leader: its pid, and
	// so its group's id, are still the command's.
	_ = syscall.Kill(-t.pid, sig)
	return true
}

// startedLocked records that t's command runs as pid and sends it what
// was held. A nil t does nothing. e.mu is held.
func (t *execTarget) startedLocked(pid int) {
	if t == nil {
		return
	}
	t.pid = pid
	for _, sig := range t.pending {
		_ = syscall.Kill(-pid, sig)
	}
	t.pending = nil
}

// exitedLocked marks the target whose command pid was reaped. e.mu is
// held.
func (e *execs) exitedLocked(pid int) {
	for _, t := range e.targets {
		if t.pid == pid {
			t.exited = true
		}
	}
}
