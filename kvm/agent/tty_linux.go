package agent

import (
	"errors"
	"fmt"
	"os"
	"path"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// mountDevpts gives the workload's root a devpts instance of its own at
// /dev/pts (newinstance: its ptys are not the agent's) with /dev/ptmx
// leading to it, as a container runtime does, and returns the path of its
// ptmx. /dev in the root is the guest's one devtmpfs, shared with the
// agent: /dev/ptmx there is covered by a bind mount of pts/ptmx, not
// replaced.
func mountDevpts(root string) (string, error) {
	pts := path.Join(root, "dev/pts")
	if st, err := os.Lstat(pts); err == nil && st.Mode()&os.ModeSymlink != 0 {
		return "", fmt.Errorf("image path /dev/pts is a symlink; cannot mount devpts there")
	}
	if err := mount("devpts", pts, "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return "", err
	}
	ptmx := path.Join(pts, "ptmx")
	dev := path.Join(root, "dev/ptmx")
	if st, err := os.Lstat(dev); err == nil && st.Mode()&os.ModeSymlink == 0 {
		if err := unix.Mount(ptmx, dev, "", unix.MS_BIND, ""); err != nil {
			return "", fmt.Errorf("bind mount %s on /dev/ptmx: %w", ptmx, err)
		}
	} else if errors.Is(err, os.ErrNotExist) {
		if err := os.Symlink("pts/ptmx", dev); err != nil {
			return "", fmt.Errorf("/dev/ptmx: %w", err)
		}
	}
	return ptmx, nil
}

// openPTY opens a new pseudo-terminal from ptmx: the master (the agent's
// end) and the slave (the workload's, owned by uid:gid as login makes
// it), sized ws. Both are close-on-exec: the workload gets the slave as
// its stdio.
func openPTY(ptmx string, ws channel.WindowSize, uid, gid int) (master, slave *os.File, err error) {
	mfd, err := unix.Open(ptmx, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("terminal: opening %s: %w", ptmx, err)
	}
	master = os.NewFile(uintptr(mfd), "ptmx")
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("terminal: unlocking: %w", err)
	}
	// TIOCGPTPEER opens the slave of this very master, whatever is (or
	// is not) mounted at /dev/pts in this mount namespace.
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(mfd), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		master.Close()
		return nil, nil, fmt.Errorf("terminal: opening its slave: %w", errno)
	}
	slave = os.NewFile(sfd, "pts")
	if err := unix.Fchown(int(sfd), uid, gid); err != nil {
		master.Close()
		slave.Close()
		return nil, nil, fmt.Errorf("terminal: giving it to the workload's user: %w", err)
	}
	if err := setWindowSize(master, ws); err != nil {
		master.Close()
		slave.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

// setWindowSize sets the terminal's size; the kernel sends SIGWINCH to
// its foreground process group when it changed.
func setWindowSize(master *os.File, ws channel.WindowSize) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return fmt.Errorf("terminal: %w", err)
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: ws.Rows, Col: ws.Cols})
	}); err != nil {
		return fmt.Errorf("terminal: %w", err)
	}
	if ierr != nil {
		return fmt.Errorf("terminal: setting its size: %w", ierr)
	}
	return nil
}

// setTTYAttr makes the process's stdin (the terminal's slave) its
// controlling terminal when it runs on one.
func setTTYAttr(sys *syscall.SysProcAttr, tty *channel.WindowSize) {
	if tty != nil {
		sys.Setctty, sys.Ctty = true, 0
	}
}
