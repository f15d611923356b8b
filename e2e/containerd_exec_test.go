package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/ptytest"
)

// testCrictlExecInteractive runs interactive execs in container id (whose
// image has sh, cat, tty and stty) through crictl, containerd, the shim's
// stdin fifo and ResizePty, the host service's ExecInteractive and the
// guest's EXEC_STDIN and EXEC_RESIZE:
//   - crictl exec -i CONTAINER cat gives back what is piped into it;
//   - crictl exec -it, driven through a host pseudo-terminal as a user's
//     shell does, runs on a terminal of the container's root (tty names
//     /dev/pts/N) of the host terminal's size; resizing the host terminal
//     reaches it (another exec sees the new size on that pts); a line
//     typed in raw mode reaches it, echoed by the guest's terminal.
func testCrictlExecInteractive(t *testing.T, cd *containerd, id string) {
	t.Helper()
	crictl := func(args ...string) *exec.Cmd {
		return exec.Command("crictl", append([]string{"--runtime-endpoint", "unix://" + cd.sock, "--image-endpoint", "unix://" + cd.sock, "--timeout", "300s"}, args...)...)
	}
	// -i: piped stdin, then its end.
	in := strings.Repeat("piped-in line\n", 3000) // more than one fifo read, one frame
	c := crictl("exec", "-i", id, "cat")
	c.Stdin = strings.NewReader(in)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil || string(out) != in {
		t.Errorf("crictl exec -i %s cat: %d bytes (want %d), %v\nstderr: %s", id, len(out), len(in), err, stderr.String())
	}

	// -it through a host pseudo-terminal.
	driveExecTTY(t, crictl("exec", "-it", id, "sh", "-c", ttyScript), func(pts string) bool {
		out, err := crictl("exec", id, "stty", "-F", pts, "size").Output()
		return err == nil && string(out) == "50 132\n"
	})
}

// ttyScript is what driveExecTTY's command runs: it names its terminal,
// prints its size, reads a line and prints the size again with the line.
const ttyScript = `echo "pts $(tty)"; echo "size $(stty size)"; read line; echo "size $(stty size) got $line"`

// driveExecTTY runs c (an exec -it of ttyScript) on a host
// pseudo-terminal of 33x101, as a user's shell does: the command must
// name a /dev/pts/N and see that size; the host terminal is then resized
// to 50x132 until resized(pts) sees it (from another exec); a line typed
// in raw mode must come back echoed and read at the new size, and c must
// succeed. It returns the host terminal's slave, for checks of its modes.
func driveExecTTY(t *testing.T, c *exec.Cmd, resized func(pts string) bool) *os.File {
	t.Helper()
	master, slave := ptytest.Open(t)
	ptytest.SetSize(t, master, 33, 101)
	var se syncBuffer
	c.Stdin, c.Stdout, c.Stderr = slave, slave, bufferWriter{&se}
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0} // its controlling terminal: SIGWINCH
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	var screen syncBuffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			screen.WriteString(string(buf[:n]))
			if err != nil {
				return
			}
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Minute)
		for !cond() {
			select {
			case err := <-exited:
				t.Fatalf("%s exited (%v) before %s:\n%q\nstderr:\n%s", c.Args[0], err, what, screen.String(), se.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("not within 3 minutes: %s:\n%q\nstderr:\n%s", what, screen.String(), se.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("the terminal's initial size", func() bool { return strings.Contains(screen.String(), "size 33 101\r\n") })
	m := regexp.MustCompile(`pts (/dev/pts/[0-9]+)\r\n`).FindStringSubmatch(screen.String())
	if m == nil {
		t.Fatalf("tty printed no /dev/pts/N: %q", screen.String())
	}
	ptytest.SetSize(t, master, 50, 132)
	waitFor("the resize on "+m[1], func() bool { return resized(m[1]) })
	if _, err := master.Write([]byte("typed\r")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("%v: %v\nstderr:\n%s", c.Args, err, se.String())
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("%v did not end within 3 minutes:\n%q", c.Args, screen.String())
	}
	if s := screen.String(); !strings.Contains(s, "typed\r\n") || !strings.Contains(s, "size 50 132 got typed\r\n") {
		t.Errorf("the terminal showed %q, want the typed line echoed and read at the new size", s)
	}
	return slave
}
