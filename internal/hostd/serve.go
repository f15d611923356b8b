package hostd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/fsutil"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// SocketName is the host service's socket in the state directory, the
// default of 'launcher daemon --socket' and of its clients.
const SocketName = "launcher.sock"

// DefaultSocket is the socket of the host service of stateDir.
func DefaultSocket(stateDir string) string { return filepath.Join(stateDir, SocketName) }

// ServeOptions says where and for whom the service listens.
type ServeOptions struct {
	// Socket is the unix socket path (default DefaultSocket).
	Socket string
	// Group, when not 0, is a group whose members may use the socket too
	// (mode 0660); by default only root and the service's own user can
	// (0600). Each connection's peer credentials are checked as well.
	Group int
	// KeepSandboxes leaves running sandboxes running when the service
	// stops (the next one takes them over); by default they are stopped.
	KeepSandboxes bool
}

// Serve serves s on a unix socket until ctx ends, then shuts the service
// down: launches in progress are aborted and running workloads stopped
// gracefully (Service.Shutdown). One service runs per state directory: a
// second one fails, saying so. ready, when not nil, is called once the
// socket accepts connections.
func Serve(ctx context.Context, s *Service, o ServeOptions, ready func(socket string)) error {
	if o.Socket == "" {
		o.Socket = DefaultSocket(s.cfg.StateDir)
	}
	lockPath := filepath.Join(s.cfg.StateDir, "launcher.lock")
	lockCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	unlock, err := fsutil.Lock(lockCtx, lockPath)
	cancel()
	if err != nil {
		return fmt.Errorf("another launcher daemon serves %s (%s is locked): stop it first, or give this one its own $BULWARK_STATE", s.cfg.StateDir, lockPath)
	}
	defer unlock()
	// The lock is ours: a socket file left there is a dead service's.
	if err := os.Remove(o.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the old socket: %w", err)
	}
	l, err := listen(o.Socket, o.Group)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(4<<20), grpc.Creds(insecure.NewCredentials()))
	bulwarkv1.RegisterHostServer(srv, s)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	if ready != nil {
		ready(o.Socket)
	}
	select {
	case err := <-served:
		s.Shutdown(context.Background(), o.KeepSandboxes)
		return fmt.Errorf("serving %s: %w", o.Socket, err)
	case <-ctx.Done():
	}
	if o.KeepSandboxes {
		s.cfg.Logger.Info("shutting down: running sandboxes are left running for the next launcher daemon")
	} else {
		s.cfg.Logger.Info("shutting down: stopping every running workload")
	}
	// Launches and streams end with the service's context; the workloads
	// get their stop timeouts, or are left running.
	err = s.Shutdown(context.Background(), o.KeepSandboxes)
	srv.Stop()
	os.Remove(o.Socket)
	return err
}

// listen makes the socket, root-only (or for group too) before anyone can
// connect, and checks every peer's credentials as it accepts.
func listen(path string, group int) (net.Listener, error) {
	mode := os.FileMode(0o600)
	if group > 0 {
		mode = 0o660
	}
	// The socket is made under a umask that leaves nothing open, then
	// given its mode: no moment where another user could connect.
	old := syscall.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if group > 0 {
		if err := os.Chown(path, -1, group); err != nil {
			l.Close()
			return nil, fmt.Errorf("socket group %d: %w", group, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, err
	}
	return &peerListener{UnixListener: l, group: group}, nil
}

// peerListener accepts connections only from root, the service's own
// user and, when set, members of group: the socket's mode says the same,
// this holds even if its directory or mode is changed.
type peerListener struct {
	*net.UnixListener
	group int
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		if err := allowedPeer(c, l.group); err != nil {
			c.Close()
			continue
		}
		return c, nil
	}
}

func allowedPeer(c *net.UnixConn, group int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if cred.Uid == 0 || int(cred.Uid) == os.Geteuid() || (group > 0 && inGroup(int(cred.Pid), int(cred.Gid), group)) {
		return nil
	}
	return fmt.Errorf("uid %d may not use the host service", cred.Uid)
}

// inGroup reports whether the process pid (primary group gid) is in group.
func inGroup(pid, gid, group int) bool {
	if gid == group {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, f := range strings.Fields(rest) {
				if n, err := strconv.Atoi(f); err == nil && n == group {
					return true
				}
			}
		}
	}
	return false
}
