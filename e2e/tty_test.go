package e2e

import (
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/ptytest"

	"golang.org/x/sys/unix"
)

// testTerminal drives 'launcher run -i -t' through a pseudo-terminal, as
// a user at a terminal does: the workload sees a terminal of the
// launcher's size on stdin and stdout, a change of the launcher's
// terminal size (SIGWINCH) reaches it, a line typed in raw mode reaches
// it (echoed by the guest's terminal), its exit code is the launcher's,
// and the launcher's terminal is as it was once the launcher exits.
func testTerminal(t *testing.T, e *env, signer []string) {
	script := strings.Join([]string{
		`[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-terminals`,
		`echo "size $(stty size)"`,
		`while [ "$(stty size)" = "33 101" ]; do :; done`, // until the host's resize arrives
		`echo "resized $(stty size)"`,
		`read line`,
		`echo "read $line"`,
		`exit 5`,
	}, "\n")
	e.must("launcher", "image", "build", "-o", e.path("tty-image"), "--busybox", "sh,stty,echo",
		"--entrypoint", "/bin/sh", "--cmd", "-c", "--cmd", script)
	e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", e.path("tty-image"))
	e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", e.path("tty-image"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "tty",
		"-o", e.path("attestd/policies/tty.yaml"))
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)

	master, slave := ptytest.Open(t)
	ptytest.SetSize(t, master, 33, 101)
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"run", "--attestd", e.addr, "--ca", e.ca, "--policy", "tty",
		"--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"), "--image", e.path("tty-image"), "-i", "-t"}, signer...)
	c := e.cmd("launcher", args...)
	var se syncBuffer
	c.Stdin, c.Stdout, c.Stderr = slave, slave, bufferWriter{&se}
	// The launcher's terminal is its controlling terminal: it gets the
	// SIGWINCH of a resize, as in a shell.
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
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
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Minute)
		for !strings.Contains(screen.String(), want) {
			select {
			case err := <-exited:
				t.Fatalf("launcher exited (%v) before the terminal showed %q:\n%q\nstderr:\n%s", err, want, screen.String(), se.String())
			default:
			}
			if time.Now().After(deadline) {
				c.Process.Kill()
				t.Fatalf("the terminal did not show %q in 5 minutes:\n%q\nstderr:\n%s", want, screen.String(), se.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("all-terminals\r\nsize 33 101\r\n")
	ptytest.SetSize(t, master, 50, 132) // the kernel sends the launcher SIGWINCH
	waitFor("resized 50 132\r\n")
	// Raw mode: the launcher passes the carriage return as typed; the
	// guest's terminal makes it a newline and echoes the line.
	if _, err := master.Write([]byte("typed\r")); err != nil {
		t.Fatal(err)
	}
	waitFor("typed\r\nread typed\r\n")
	err = <-exited
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 5 {
		t.Fatalf("launcher exit %v, want the workload's 5\nterminal:\n%q\nstderr:\n%s", err, screen.String(), se.String())
	}
	after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if *after != *before {
		t.Errorf("the launcher left its terminal changed:\n%+v\nwant\n%+v", *after, *before)
	}
}

// bufferWriter writes into a syncBuffer: an io.Writer for exec.Cmd.
type bufferWriter struct{ b *syncBuffer }

func (w bufferWriter) Write(p []byte) (int, error) {
	w.b.WriteString(string(p))
	return len(p), nil
}
