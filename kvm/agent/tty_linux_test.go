package agent

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// TestOpenPTY starts a shell the way runOnTTY starts a workload (the
// slave as stdin, stdout and stderr and controlling terminal of a new
// session) and checks that it has a terminal of the initial size, that
// setWindowSize changes the size it sees, and that its output and input
// travel through the master.
func TestOpenPTY(t *testing.T) {
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		t.Skipf("no /dev/ptmx on this host: %v", err)
	}
	for _, name := range []string{"sh", "stty"} {
		if _, err := exec.LookPath(name); err != nil {
			t.Skipf("%s not installed", name)
		}
	}
	master, slave, err := openPTY("/dev/ptmx", channel.WindowSize{Rows: 33, Cols: 101}, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	cmd := exec.Command("sh", "-c", `[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo tty; stty size; read x; echo "got $x"; stty size; echo err >&2`)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	out := bufio.NewReader(master)
	line := func() string {
		t.Helper()
		l, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the terminal: %q, %v", l, err)
		}
		return strings.TrimRight(l, "\r\n")
	}
	if l := line(); l != "tty" {
		t.Fatalf("first line %q: stdin, stdout and stderr are not all terminals", l)
	}
	if l := line(); l != "33 101" {
		t.Fatalf("stty size = %q, want the initial 33 101", l)
	}
	// The shell now waits in read: resize, then type its line.
	if err := setWindowSize(master, channel.WindowSize{Rows: 50, Cols: 132}); err != nil {
		t.Fatal(err)
	}
	if _, err := master.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	if l := line(); l != "hello" { // the terminal's echo of what was typed
		t.Fatalf("echo %q", l)
	}
	if l := line(); l != "got hello" {
		t.Fatalf("read gave %q", l)
	}
	if l := line(); l != "50 132" {
		t.Fatalf("stty size after the resize = %q, want 50 132", l)
	}
	if l := line(); l != "err" {
		t.Fatalf("stderr on the terminal: %q", l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	// Every slave closed: the master reads the end.
	if b, err := out.ReadByte(); err == nil {
		t.Fatalf("read %q after the shell exited", b)
	}
}

// TestMountDevpts gives a directory a devpts instance of its own and a
// /dev/ptmx leading to it (a symlink where there was none, a bind mount
// over the node a devtmpfs has), and opens a terminal there: the slave
// belongs to that instance (pty 0 of a fresh one), not to the host's
// /dev/pts.
func TestMountDevpts(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mounting devpts needs root")
	}
	for _, tc := range []struct {
		name    string
		hasNode bool
	}{{"no /dev/ptmx", false}, {"a /dev/ptmx node", true}} {
		t.Run(tc.name, func(t *testing.T) {
			testMountDevpts(t, tc.hasNode)
		})
	}
}

func testMountDevpts(t *testing.T, hasNode bool) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	dev := filepath.Join(root, "dev/ptmx")
	if hasNode { // a stand-in for devtmpfs's node: the bind mount covers it
		if err := os.WriteFile(dev, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ptmx, err := mountDevpts(root)
	if err != nil {
		t.Skipf("cannot mount devpts here: %v", err)
	}
	t.Cleanup(func() {
		_ = unix.Unmount(dev, unix.MNT_DETACH)
		_ = unix.Unmount(filepath.Join(root, "dev/pts"), unix.MNT_DETACH)
	})
	if ptmx != filepath.Join(root, "dev/pts/ptmx") {
		t.Fatalf("ptmx %s", ptmx)
	}
	if !hasNode {
		if target, err := os.Readlink(dev); err != nil || target != "pts/ptmx" {
			t.Fatalf("/dev/ptmx -> %q, %v; want pts/ptmx", target, err)
		}
	}
	st, err := os.Stat(dev)
	if err != nil || st.Mode().Perm() != 0o666 || st.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("/dev/ptmx mode %v, %v; want the instance's ptmx, 0666 (ptmxmode)", st.Mode(), err)
	}
	master, slave, err := openPTY(dev, channel.WindowSize{Rows: 24, Cols: 80}, 4242, 4243)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer slave.Close()
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil || n != 0 {
		t.Fatalf("pty number %d, %v; want 0 of a new instance", n, err)
	}
	var sst unix.Stat_t
	if err := unix.Stat(filepath.Join(root, "dev/pts/0"), &sst); err != nil || sst.Uid != 4242 || sst.Gid != 4243 {
		t.Fatalf("slave owned by %d:%d, %v; want the workload's 4242:4243", sst.Uid, sst.Gid, err)
	}
	ws, err := unix.IoctlGetWinsize(int(slave.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Row != 24 || ws.Col != 80 {
		t.Fatalf("size %+v, %v", ws, err)
	}
}
