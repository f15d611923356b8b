package kvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// ErrExecLimit is returned by Exec when channel.MaxExecs execs already run.
var ErrExecLimit = fmt.Errorf("kvm: exec: %d commands already run in this sandbox", channel.MaxExecs)

// execWaiter is an exec in progress: where its output goes, and its end.
type execWaiter struct {
	stdout, stderr io.Writer
	exit           chan channel.ExecExit
}

// Exec runs a command beside the running workload, in its root, as its
// user, with its environment (stdin is /dev/null), copies its output to
// stdout and stderr and returns its exit code. A command that cannot start
// returns 126 or 127 with the agent's reason as error. ctx ending stops
// waiting (the command is not killed: it ends with the sandbox, or with a
// signal: ExecOptions.Signals).
func (s *Sandbox) Exec(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	return s.exec(ctx, nil, args, ExecOptions{}, stdout, stderr)
}

// ExecOptions make an exec interactive (crictl exec -i -t).
type ExecOptions struct {
	// Stdin, when not nil, is the command's input: read until its end or
	// an error (then the command's stdin ends), in EXEC_STDIN frames. Its
	// reading goroutine ends at its next Read after the exec ended: close
	// it then. Nil: stdin is /dev/null.
	Stdin io.Reader
	// TTY, when set, runs the command on a terminal of this size (its
	// stdout and stderr merged, written to stdout).
	TTY *WindowSize
	// Resize, with TTY, delivers new sizes of the terminal while the exec
	// runs.
	Resize <-chan WindowSize
	// Signals delivers signals (1..64) for the command's process group
	// while the exec runs (EXEC_SIGNAL); its end, 128+N for signal N,
	// is the exit code as for any end. An invalid number is skipped, a
	// signal after the command ended dropped.
	Signals <-chan int
}

// ExecWith is Exec with stdin and/or a terminal.
func (s *Sandbox) ExecWith(ctx context.Context, args []string, opts ExecOptions, stdout, stderr io.Writer) (int, error) {
	return s.exec(ctx, nil, args, opts, stdout, stderr)
}

// exec runs an EXEC beside the workload or, with container, in a pod's
// container.
func (s *Sandbox) exec(ctx context.Context, container *int, args []string, opts ExecOptions, stdout, stderr io.Writer) (int, error) {
	s.mu.Lock()
	if !s.runningLocked() {
		st := s.state
		s.mu.Unlock()
		return -1, fmt.Errorf("kvm: exec: the workload is not running (the guest is %s)", st)
	}
	if len(s.execs) >= channel.MaxExecs {
		s.mu.Unlock()
		return -1, ErrExecLimit
	}
	s.execSeq++
	x := channel.Exec{ID: s.execSeq, Args: args, Container: container, Stdin: opts.Stdin != nil, TTY: opts.TTY}
	if err := x.Validate(); err != nil {
		s.mu.Unlock()
		return -1, fmt.Errorf("kvm: %w", err)
	}
	w := &execWaiter{stdout: stdout, stderr: stderr, exit: make(chan channel.ExecExit, 1)}
	if s.execs == nil {
		s.execs = map[uint32]*execWaiter{}
	}
	s.execs[x.ID] = w
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.execs, x.ID)
		s.mu.Unlock()
	}()
	if err := s.write(channel.TypeExec, x, 5*time.Second); err != nil {
		return -1, err
	}
	ended := make(chan struct{})
	defer close(ended)
	if opts.Stdin != nil {
		go s.feedExecStdin(x.ID, opts.Stdin, ended)
	}
	if opts.TTY != nil && opts.Resize != nil {
		go s.resizeExec(x.ID, opts.Resize, ended)
	}
	if opts.Signals != nil {
		go s.signalExec(x.ID, opts.Signals, ended)
	}
	select {
	case e := <-w.exit:
		if e.Error != "" {
			return e.Code, &GuestError{Message: sanitize(e.Error)}
		}
		return e.Code, nil
	case <-s.exited:
		return -1, errors.New("kvm: exec: the sandbox ended")
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// feedExecStdin sends what r gives as exec id's input, then its end,
// until the exec ended.
func (s *Sandbox) feedExecStdin(id uint32, r io.Reader, ended <-chan struct{}) {
	buf := make([]byte, channel.MaxStdinChunk)
	for {
		n, err := r.Read(buf)
		select {
		case <-ended:
			return
		case <-s.exited:
			return
		default:
		}
		if n > 0 {
			if werr := s.writeRaw(channel.TypeExecStdin, channel.ExecInput{ID: id, Data: buf[:n]}.Encode(), 30*time.Second); werr != nil {
				s.log.Debug("exec stdin", "exec", id, "err", werr)
				return
			}
		}
		if err != nil {
			_ = s.writeRaw(channel.TypeExecStdin, channel.ExecInput{ID: id}.Encode(), 30*time.Second)
			return
		}
	}
}

// resizeExec sends the sizes sizes delivers as EXEC_RESIZE frames until
// the exec ended; an invalid size is skipped.
func (s *Sandbox) resizeExec(id uint32, sizes <-chan WindowSize, ended <-chan struct{}) {
	for {
		select {
		case <-ended:
			return
		case ws, ok := <-sizes:
			if !ok {
				return
			}
			r := channel.ExecResize{ID: id, Rows: ws.Rows, Cols: ws.Cols}
			if err := r.Validate(); err != nil {
				s.log.Debug("exec resize", "exec", id, "err", err)
				continue
			}
			if err := s.write(channel.TypeExecResize, r, 2*time.Second); err != nil {
				s.log.Debug("exec resize", "exec", id, "err", err)
				return
			}
		}
	}
}

// handleExecFrame applies EXEC_OUT and EXEC_EXIT. s.mu is held.
func (s *Sandbox) handleExecFrame(t channel.Type, body []byte) error {
	if t == channel.TypeExecOut {
		o, err := channel.DecodeExecOutput(body)
		if err != nil {
			return err
		}
		w, ok := s.execs[o.ID]
		if !ok {
			return nil // an exec whose caller gave up: its output is dropped
		}
		dst := w.stdout
		if o.Stream == 2 {
			dst = w.stderr
		}
		if dst != nil {
			s.mu.Unlock()
			_, _ = dst.Write(o.Data)
			s.mu.Lock()
		}
		return nil
	}
	var e channel.ExecExit
	if err := channel.Decode(t, body, &e); err != nil {
		return err
	}
	if e.Code < 0 || e.Code > 255 {
		return fmt.Errorf("exec %d: exit code %d out of range", e.ID, e.Code)
	}
	if len(e.Error) > 4096 {
		e.Error = e.Error[:4096]
	}
	if w, ok := s.execs[e.ID]; ok {
		delete(s.execs, e.ID) // a second EXEC_EXIT finds nothing to deliver to
		w.exit <- e
	} else if e.ID == 0 || e.ID > s.execSeq {
		return fmt.Errorf("EXEC_EXIT for exec %d, which the host never started", e.ID)
	}
	return nil
}
