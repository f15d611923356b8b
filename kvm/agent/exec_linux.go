package agent

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// workload is what an exec shares with the running workload: its root
// (channel.RootfsDir), environment, working directory and user.
type workload struct {
	env     []string
	workDir string
	id      Identity
}

// execs tracks the commands EXEC started. Their exit statuses come from
// the one reaper (reapUntil), which waits for every child of the agent.
type execs struct {
	mu      sync.Mutex
	waiting map[int]chan int // pid → its exit code, once reaped
	early   map[int]int      // reaped before its exec registered it
	running int
	inputs  map[uint32]*execInput  // exec id → its stdin and terminal, while it runs
	targets map[uint32]*execTarget // exec id → where its EXEC_SIGNAL goes (execsignal_linux.go)
}

// execInput is what the host's EXEC_STDIN and EXEC_RESIZE frames reach
// (and, for a pod container's own process, CONTAINER_STDIN and
// CONTAINER_RESIZE: podtty_linux.go): an exec's stdin feed (nil without
// Exec.Stdin) and terminal (nil without Exec.TTY). It is registered when
// the EXEC is read, before its process starts, so that no input that
// follows the EXEC is lost: the feed queues until the process's stdin is
// attached, the last size until its terminal is.
type execInput struct {
	feed *stdinFeed
	mu   sync.Mutex
	tty  *os.File
	size *channel.WindowSize // a resize before the terminal was opened
}

// register notes exec x's input, if it asked for stdin or a terminal.
// watchHost calls it as it reads the EXEC; runExec removes it.
func (e *execs) register(x *channel.Exec) {
	in := newInput(x.Stdin, x.TTY)
	if in == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.inputs == nil {
		e.inputs = map[uint32]*execInput{}
	}
	if old, ok := e.inputs[x.ID]; ok && old.feed != nil { // a host reusing an id: the old input ends
		old.feed.Close()
	}
	e.inputs[x.ID] = in
}

// unregister forgets exec id's input (in, if it is still the one
// registered) and ends it.
func (e *execs) unregister(id uint32, in *execInput) {
	e.mu.Lock()
	if e.inputs[id] == in {
		delete(e.inputs, id)
	}
	e.mu.Unlock()
	if in != nil && in.feed != nil {
		in.feed.Close()
	}
}

// input is exec id's input, or nil for an exec that has none (or ended).
func (e *execs) input(id uint32) *execInput {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.inputs[id]
}

// newInput is the input of a process that asked for stdin and/or a
// terminal (an exec, or a pod container's own process); nil for one that
// asked for neither.
func newInput(stdin bool, tty *channel.WindowSize) *execInput {
	if !stdin && tty == nil {
		return nil
	}
	in := &execInput{}
	if stdin {
		in.feed = newPendingFeed()
	}
	return in
}

// setTTY gives the input its terminal, applying the last size asked for
// before it was there.
func (in *execInput) setTTY(master *os.File) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.tty = master
	if in.size != nil {
		return setWindowSize(master, *in.size)
	}
	return nil
}

// execStdin applies an EXEC_STDIN: input for the exec, or its end. Input
// for an exec without stdin, or one that ended, is dropped.
func (s *session) execStdin(in *channel.ExecInput) {
	s.execs.input(in.ID).write(in.Data)
}

// execResize applies an EXEC_RESIZE to the exec's terminal, if it has one.
func (s *session) execResize(r *channel.ExecResize) {
	x := s.execs.input(r.ID)
	if x == nil {
		return
	}
	if err := x.resize(r.Size()); err != nil {
		s.log.Warn("resizing an exec's terminal", "exec", r.ID, "err", err)
	}
}

// resize sets the size of the input's terminal, or, before it is there,
// the size it gets.
func (in *execInput) resize(ws channel.WindowSize) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.tty == nil {
		in.size = &ws
		return nil
	}
	return setWindowSize(in.tty, ws)
}

// write applies input for the process: its end with no data. Input for
// a process without stdin (nil, or no feed) is dropped.
func (in *execInput) write(data []byte) {
	if in == nil || in.feed == nil {
		return
	}
	if len(data) == 0 {
		in.feed.Close()
		return
	}
	in.feed.Push(data)
}

// reaped hands the exit code of a child that is not the workload to its
// exec, if it is one.
func (e *execs) reaped(pid, code int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.exitedLocked(pid)
	if ch, ok := e.waiting[pid]; ok {
		delete(e.waiting, pid)
		ch <- code
		return
	}
	if e.early == nil {
		e.early = map[int]int{}
	}
	e.early[pid] = code // an exec between StartProcess and registering, or a stray
}

// start starts one command under e.mu, so that the reaper cannot see its
// exit before it is registered, and returns the channel its code arrives
// on. The command's process group becomes t's (nil: none), which gets the
// signals held for it.
func (e *execs) start(t *execTarget, startProc func() (*os.Process, error)) (*os.Process, chan int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.running >= channel.MaxExecs {
		return nil, nil, fmt.Errorf("%d execs already run in this sandbox (the limit)", channel.MaxExecs)
	}
	proc, err := startProc()
	if err != nil {
		return nil, nil, err
	}
	e.running++
	ch := make(chan int, 1)
	if code, ok := e.early[proc.Pid]; ok {
		delete(e.early, proc.Pid)
		ch <- code
		if t != nil {
			t.exited = true // already reaped: its pid is no longer its
		}
	} else {
		t.startedLocked(proc.Pid)
		if e.waiting == nil {
			e.waiting = map[int]chan int{}
		}
		e.waiting[proc.Pid] = ch
	}
	return proc, ch, nil
}

func (e *execs) done() {
	e.mu.Lock()
	e.running--
	e.mu.Unlock()
}

// runExec runs one EXEC beside the workload and reports its output and
// exit code; a command that cannot start ends with an EXEC_EXIT saying why.
// With Exec.Stdin its stdin is a pipe fed by EXEC_STDIN; with Exec.TTY it
// runs on a new terminal of its root's devpts (as the workload's -t), as
// stdin, stdout, stderr and controlling terminal.
//
// Its EXEC_SIGNAL frames go to t (expected as the EXEC was read): held
// until the command's process group exists, then sent to it.
func (s *session) runExec(x *channel.Exec, t *execTarget) {
	exit := func(code int, err error) {
		msg := channel.ExecExit{ID: x.ID, Code: code}
		if err != nil {
			msg.Error = err.Error()
		}
		if serr := s.send(channel.TypeExecExit, msg); serr != nil {
			s.log.Error("sending EXEC_EXIT", "err", serr)
		}
	}
	in := s.execs.input(x.ID)
	defer s.execs.unregister(x.ID, in)
	defer s.execs.forget(x.ID, t)
	w, root := s.workload, channel.RootfsDir
	if x.Container != nil {
		var err error
		if w, root, err = s.pod.workloadOf(*x.Container); err != nil {
			exit(126, err)
			return
		}
	}
	prog, err := LookPath(root, x.Args[0], w.env, w.workDir)
	if err != nil {
		exit(127, err)
		return
	}
	st, err := s.execStdio(x.Stdin, x.TTY, in, root, w.id)
	if err != nil {
		exit(126, err)
		return
	}
	sys := &syscall.SysProcAttr{
		Chroot:     root,
		Credential: &syscall.Credential{Uid: w.id.UID, Gid: w.id.GID, Groups: w.id.groups()},
		Setsid:     true,
	}
	setTTYAttr(sys, x.TTY)
	proc, codeCh, err := s.execs.start(t, func() (*os.Process, error) {
		return os.StartProcess(prog, x.Args, &os.ProcAttr{Dir: w.workDir, Env: w.env, Files: st.child, Sys: sys})
	})
	st.closeChild() // the command holds its own copies
	if err != nil {
		st.closeParent()
		exit(126, fmt.Errorf("starting %s: %w", x.Args[0], err))
		return
	}
	defer s.execs.done()
	var wg sync.WaitGroup
	s.pumpOutputs(&wg, st.out, func(stream byte, b []byte) error {
		return s.sendRaw(channel.TypeExecOut, channel.ExecOutput{ID: x.ID, Stream: stream, Data: b}.Encode())
	})
	code := <-codeCh
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(time.Second):
		// Its own background processes hold the pipes: end its session.
		_ = syscall.Kill(-proc.Pid, syscall.SIGKILL)
		select {
		case <-drained:
		case <-time.After(2 * time.Second):
			exit(code, errors.New("the command's output did not close after its session was killed"))
			return
		}
	}
	exit(code, nil)
}

// execStdio is an exec's files: the child's stdin, stdout and stderr,
// and the agent's ends of its output (stdout and stderr, or the
// terminal's master alone).
type execStdio struct {
	child  []*os.File
	out    []*os.File
	closer []*os.File // the child's ends, closed once it started
}

func (st *execStdio) closeChild() {
	for _, f := range st.closer {
		f.Close()
	}
}

func (st *execStdio) closeParent() {
	for _, f := range st.out {
		f.Close()
	}
}

// execStdio opens what an exec (or a pod container's process) reads and
// writes: a terminal of root's devpts of size tty (Exec.TTY), or pipes;
// with stdin (Exec.Stdin) the input (in, registered when the EXEC was
// read) is attached to the terminal or its stdin pipe.
func (s *session) execStdio(stdin bool, tty *channel.WindowSize, in *execInput, root string, id Identity) (*execStdio, error) {
	if (stdin || tty != nil) && in == nil {
		return nil, errors.New("the process's input was not registered")
	}
	if tty != nil {
		ptmx, err := s.devpts(root)
		if err != nil {
			return nil, fmt.Errorf("terminal: %w", err)
		}
		master, slave, err := openPTY(ptmx, *tty, int(id.UID), int(id.GID))
		if err != nil {
			return nil, err
		}
		st := &execStdio{child: []*os.File{slave, slave, slave}, out: []*os.File{master}, closer: []*os.File{slave}}
		if err := in.setTTY(master); err != nil {
			st.closeChild()
			st.closeParent()
			return nil, err
		}
		if stdin {
			in.feed.attach(ttyInput{master})
		}
		return st, nil
	}
	st := &execStdio{}
	var inFile *os.File
	if stdin {
		inR, inW, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		inFile = inR
		in.feed.attach(inW)
	} else {
		devnull, err := os.Open("/dev/null")
		if err != nil {
			return nil, err
		}
		inFile = devnull
	}
	st.closer = append(st.closer, inFile)
	for range 2 {
		r, w, err := os.Pipe()
		if err != nil {
			st.closeChild()
			st.closeParent()
			return nil, err
		}
		st.out, st.closer = append(st.out, r), append(st.closer, w)
	}
	st.child = []*os.File{inFile, st.closer[1], st.closer[2]}
	return st, nil
}
