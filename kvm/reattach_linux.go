package kvm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bulwark-project/bulwark/kvm/channel"
	"golang.org/x/sys/unix"
)

// Persisted is what another process needs to take over a persistent
// sandbox (Config.RunDir) whose workload runs: QEMU's pid and start time
// (so a recycled pid is never mistaken for it), its cgroup directories and
// accelerator.
type Persisted struct {
	PID        int
	StartTime  uint64
	CgroupDirs []string
	Accel      string
}

// Persisted describes the running sandbox for Reattach.
func (s *Sandbox) Persisted() Persisted {
	p := Persisted{PID: s.PID(), StartTime: s.startTime, Accel: s.accel.Accel}
	if s.cg != nil {
		p.CgroupDirs = s.cg.dirs()
	}
	return p
}

// ErrGone is returned by Reattach when the sandbox's QEMU no longer runs.
var ErrGone = errors.New("kvm: the sandbox's QEMU no longer runs")

// reattachTimeout bounds how long the agent may take to answer REATTACH.
const reattachTimeout = 15 * time.Second

// maxReattachSkip bounds what is discarded before REATTACHED: frames that
// were in flight when the previous host process died.
const maxReattachSkip = 8 << 20

// Reattach takes over a persistent sandbox that another process started
// (with cfg.RunDir, the same Name) and that has since died: it connects to
// QEMU's QMP and guest channel sockets in cfg.RunDir, tells the agent
// (REATTACH), skips whatever was in flight, and learns from the agent
// whether the workload still runs or has exited (Wait then returns its
// status). Output frames that were in flight when the previous process
// died may be lost; none written after is. ErrGone: QEMU is no longer
// there.
func Reattach(ctx context.Context, cfg Config, p Persisted) (*Sandbox, error) {
	if cfg.RunDir == "" || cfg.Name == "" {
		return nil, errors.New("kvm: reattach: the sandbox's run directory and name are needed")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stdout == nil || cfg.Stderr == nil {
		return nil, errors.New("kvm: reattach: Stdout and Stderr are needed")
	}
	if p.PID <= 0 || !sameProcess(p.PID, p.StartTime) {
		return nil, ErrGone
	}
	pidfd, err := unix.PidfdOpen(p.PID, 0)
	if err != nil {
		return nil, ErrGone
	}
	// The pid could have been recycled between the check and the open.
	if !sameProcess(p.PID, p.StartTime) {
		unix.Close(pidfd)
		return nil, ErrGone
	}
	proc, err := os.FindProcess(p.PID)
	if err != nil {
		unix.Close(pidfd)
		return nil, ErrGone
	}
	s := &Sandbox{
		cfg: cfg, log: cfg.Logger.With("sandbox", cfg.Name), accel: AccelChoice{Accel: p.Accel, Reason: "reattached"},
		proc: proc, startTime: p.StartTime, state: stateReattaching,
		console: newLineTail(40, nil), qerr: newLineTail(20, nil),
		hello: make(chan struct{}), started: make(chan struct{}), ready: make(chan struct{}),
		exited: make(chan struct{}), readerDone: make(chan struct{}), eventsDone: make(chan struct{}),
		reattachedCh: make(chan struct{}),
	}
	close(s.hello)
	close(s.started)
	if len(p.CgroupDirs) > 0 {
		s.cg = &cgroup{v1: p.CgroupDirs}
	}
	// QEMU is not our child: its pidfd says when it is gone.
	go func() {
		defer unix.Close(pidfd)
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err == nil || !errors.Is(err, unix.EINTR) {
				break
			}
		}
		if err := s.cg.remove(); err != nil {
			s.log.Warn(err.Error())
		}
		close(s.exited)
	}()
	ok := false
	defer func() {
		if !ok {
			if s.conn != nil {
				s.conn.Close()
			}
			if s.qmp != nil {
				s.qmp.Close()
			}
		}
	}()
	dctx, cancel := context.WithTimeout(ctx, reattachTimeout)
	defer cancel()
	var d net.Dialer
	dir, closeDir, err := socketDir(cfg.RunDir)
	if err != nil {
		return nil, err
	}
	defer closeDir()
	qconn, err := d.DialContext(dctx, "unix", filepath.Join(dir, qmpSocket))
	if err != nil {
		return nil, fmt.Errorf("kvm: reattach: QMP: %w", err)
	}
	if s.qmp, err = DialQMP(dctx, qconn); err != nil {
		return nil, fmt.Errorf("kvm: reattach: QMP: %w", err)
	}
	if s.conn, err = d.DialContext(dctx, "unix", filepath.Join(dir, channelSocket)); err != nil {
		return nil, fmt.Errorf("kvm: reattach: guest channel: %w", err)
	}
	nonce := make([]byte, 16)
	if _, err := io.ReadFull(s.cfg.random(), nonce); err != nil {
		return nil, err
	}
	req := channel.Reattach{Nonce: hex.EncodeToString(nonce)}
	if err := s.write(channel.TypeReattach, req, 5*time.Second); err != nil {
		return nil, fmt.Errorf("kvm: reattach: %w", err)
	}
	r := bufio.NewReaderSize(s.conn, 64<<10)
	deadline, _ := dctx.Deadline()
	s.conn.SetReadDeadline(deadline)
	skipped, err := skipTo(r, req.Marker(), maxReattachSkip)
	if err != nil {
		return nil, fmt.Errorf("kvm: reattach: waiting for the agent's REATTACHED: %w", err)
	}
	s.conn.SetReadDeadline(time.Time{})
	if skipped > 0 {
		s.log.Warn("reattach: output in flight when the previous host process died is lost", "bytes", skipped)
	}
	go s.readGuest(r)
	go s.readEvents()
	select {
	case <-s.reattachedCh:
	case <-s.exited:
		return nil, ErrGone
	case <-dctx.Done():
		return nil, fmt.Errorf("kvm: reattach: no STATUS from the agent: %w", dctx.Err())
	}
	if cfg.Pod {
		n, err := s.countPodSlots(dctx)
		if err != nil {
			return nil, fmt.Errorf("kvm: reattach: the pod's image slots: %w", err)
		}
		s.mu.Lock()
		s.pod.n = n
		s.mu.Unlock()
	}
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	s.log.Info("sandbox reattached", "pid", p.PID, "workload", st, "skipped_bytes", skipped)
	ok = true
	return s, nil
}

// skipTo reads r until just after marker and returns how many bytes came
// before it; more than limit is an error.
func skipTo(r *bufio.Reader, marker []byte, limit int) (int, error) {
	window := make([]byte, 0, len(marker))
	n := 0
	for {
		b, err := r.ReadByte()
		if err != nil {
			return n, err
		}
		if len(window) == len(marker) {
			copy(window, window[1:])
			window = window[:len(marker)-1]
			n++
			if n > limit {
				return n, fmt.Errorf("more than %d bytes before it", limit)
			}
		}
		window = append(window, b)
		if bytes.Equal(window, marker) {
			return n, nil
		}
	}
}

// sameProcess reports whether pid is a live (not zombie) process that
// started at start.
func sameProcess(pid int, start uint64) bool {
	st, state, err := processStat(pid)
	return err == nil && st == start && state != "Z" && state != "X"
}

// processStartTime is the start time of process pid (field 22 of
// /proc/PID/stat, clock ticks since boot).
func processStartTime(pid int) (uint64, error) {
	st, _, err := processStat(pid)
	return st, err
}

// processStat is the start time and the state (field 3) of process pid.
func processStat(pid int) (uint64, string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", err
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields after it start after its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, "", errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, "", errors.New("malformed /proc stat")
	}
	st, err := strconv.ParseUint(f[19], 10, 64) // field 22 is the 20th after the name
	return st, f[0], err
}

// Detach lets go of a persistent sandbox without ending it: the
// connections to QEMU and to the agent are closed, QEMU runs on, and
// another process can Reattach. The Sandbox is of no further use here
// (Wait does not return).
func (s *Sandbox) Detach() { s.closeConns() }
