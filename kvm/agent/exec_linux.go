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
}

// reaped hands the exit code of a child that is not the workload to its
// exec, if it is one.
func (e *execs) reaped(pid, code int) {
	e.mu.Lock()
	defer e.mu.Unlock()
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
// exit before it is registered, and returns the channel its code arrives on.
func (e *execs) start(startProc func() (*os.Process, error)) (*os.Process, chan int, error) {
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
	} else {
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
func (s *session) runExec(x *channel.Exec) {
	exit := func(code int, err error) {
		msg := channel.ExecExit{ID: x.ID, Code: code}
		if err != nil {
			msg.Error = err.Error()
		}
		if serr := s.send(channel.TypeExecExit, msg); serr != nil {
			s.log.Error("sending EXEC_EXIT", "err", serr)
		}
	}
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
	devnull, err := os.Open("/dev/null")
	if err != nil {
		exit(126, err)
		return
	}
	defer devnull.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		exit(126, err)
		return
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		exit(126, err)
		return
	}
	proc, codeCh, err := s.execs.start(func() (*os.Process, error) {
		return os.StartProcess(prog, x.Args, &os.ProcAttr{
			Dir: w.workDir, Env: w.env, Files: []*os.File{devnull, outW, errW},
			Sys: &syscall.SysProcAttr{
				Chroot:     root,
				Credential: &syscall.Credential{Uid: w.id.UID, Gid: w.id.GID, Groups: w.id.groups()},
				Setsid:     true,
			},
		})
	})
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		exit(126, fmt.Errorf("starting %s: %w", x.Args[0], err))
		return
	}
	defer s.execs.done()
	var wg sync.WaitGroup
	out := func(stream byte) func([]byte) error {
		return func(b []byte) error {
			return s.sendRaw(channel.TypeExecOut, channel.ExecOutput{ID: x.ID, Stream: stream, Data: b}.Encode())
		}
	}
	wg.Add(2)
	go s.pump(&wg, outR, out(1))
	go s.pump(&wg, errR, out(2))
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
