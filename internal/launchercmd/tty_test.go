package launchercmd

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/ptytest"

	"golang.org/x/sys/unix"

	"github.com/bulwark-project/bulwark/kvm"
)

// TestRunDetachedRefusesTerminal: run -d refuses -t as it refuses -i,
// naming the flag, before any daemon is asked.
func TestRunDetachedRefusesTerminal(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"BULWARK_STATE": filepath.Join(dir, "state")}
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{[]string{"-t"}, "run -d: -t: a detached workload has no terminal (run it in the foreground)"},
		{[]string{"-t", "-i"}, "run -d: -i: a detached workload has no stdin"},
	} {
		args := append([]string{"run", "-d", "--socket", filepath.Join(dir, "none.sock"), "--policy", "p", "--image", filepath.Join(dir, "image")}, tc.flags...)
		_, stderr, code := runLauncher(t, env, args...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("run -d %v: exit %d, %q; want 2 and %q", tc.flags, code, stderr, tc.want)
		}
	}
}

type resizes chan kvm.WindowSize

func (r resizes) Resize(ws kvm.WindowSize) error { r <- ws; return nil }

// TestTerminalRawModeAndSize: with -i on a terminal, the terminal is raw
// while the workload runs (no echo, no line editing, no signals from
// keys) and restored however the run ends: an error, a panic. Its size
// becomes the workload's, clamped to the channel's bounds (24x80 without
// a terminal), and a SIGWINCH sends the new size, once per change.
func TestTerminalRawModeAndSize(t *testing.T) {
	_, slave := ptytest.Open(t)
	fd := int(slave.Fd())
	before, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if before.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) == 0 {
		t.Fatalf("a new pty is not cooked: lflag %#x", before.Lflag)
	}
	tm := newTerminal(slave, slave, slave, os.Stderr)
	if tm.raw != slave || tm.size != slave {
		t.Fatalf("terminal %+v: the pty is neither raw nor sized", tm)
	}
	// Output only (-t without -i): the size is followed, nothing is raw.
	if out := newTerminal(nil, strings.NewReader(""), slave, io.Discard); out.raw != nil || out.size != slave {
		t.Fatalf("-t without -i: %+v", out)
	}
	if none := newTerminal(nil, strings.NewReader(""), io.Discard, io.Discard); none.raw != nil || none.size != nil || none.windowSize() != (kvm.WindowSize{Rows: 24, Cols: 80}) {
		t.Fatalf("no terminal: %+v %+v, want 24x80", none, none.windowSize())
	}
	for _, tc := range []struct {
		rows, cols uint16
		want       kvm.WindowSize
	}{
		{50, 132, kvm.WindowSize{Rows: 50, Cols: 132}},
		{0, 0, kvm.WindowSize{Rows: 24, Cols: 80}}, // a terminal that does not know its size
		{20000, 65535, kvm.WindowSize{Rows: 10000, Cols: 10000}},
	} {
		ptytest.SetSize(t, slave, tc.rows, tc.cols)
		if got := tm.windowSize(); got != tc.want {
			t.Errorf("size %dx%d: workload gets %+v, want %+v", tc.rows, tc.cols, got, tc.want)
		}
	}
	ptytest.SetSize(t, slave, 40, 100)

	boom := errors.New("boom")
	for _, how := range []string{"error", "panic"} {
		t.Run(how, func(t *testing.T) {
			got := make(resizes, 4)
			func() {
				defer func() {
					if r := recover(); r != nil && how != "panic" {
						t.Fatal(r)
					}
				}()
				err := tm.whileRunning(got, kvm.WindowSize{Rows: 40, Cols: 100}, func() error {
					during, err := unix.IoctlGetTermios(fd, unix.TCGETS)
					if err != nil {
						t.Fatal(err)
					}
					if during.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 {
						t.Errorf("while the workload runs: lflag %#x, want raw", during.Lflag)
					}
					// The size changes: SIGWINCH, then exactly the new size.
					ptytest.SetSize(t, slave, 60, 200)
					if err := syscall.Kill(os.Getpid(), syscall.SIGWINCH); err != nil {
						t.Fatal(err)
					}
					select {
					case ws := <-got:
						if ws != (kvm.WindowSize{Rows: 60, Cols: 200}) {
							t.Errorf("resized to %+v, want 60x200", ws)
						}
					case <-time.After(30 * time.Second):
						t.Error("no resize after SIGWINCH")
					}
					ptytest.SetSize(t, slave, 40, 100)
					if how == "panic" {
						panic(boom)
					}
					return boom
				})
				if how == "error" && err != boom {
					t.Errorf("whileRunning = %v, want the wait's error", err)
				}
			}()
			after, err := unix.IoctlGetTermios(fd, unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if *after != *before {
				t.Errorf("after the %s the terminal is not restored:\n%+v\nwant\n%+v", how, *after, *before)
			}
		})
	}
}
