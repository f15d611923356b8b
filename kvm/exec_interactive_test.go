package kvm

import (
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// terminalScript checks that it runs on a terminal, names it, prints its
// size, reads a line, prints the size again with the line, writes to
// stderr and exits 5.
var terminalScript = strings.Join([]string{
	`[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-terminals`,
	`echo "pts $(tty)"`,
	`echo "size $(stty size)"`,
	`read line`,
	`echo "size $(stty size) read $line"`,
	`echo to-stderr >&2`,
	`exit 5`,
}, "\n")

// TestExecInteractive boots one sandbox and runs execs beside its
// workload with input (EXEC_STDIN: cat gives back what it reads, more
// than one frame of it, and ends at the end of input) and with a terminal
// (EXEC_RESIZE: tty names a pts of the root's devpts, stty size reports
// the initial size and then the new one, what is typed is echoed and
// read, stderr is merged into the terminal's output).
func TestExecInteractive(t *testing.T) {
	e := bootEnv(t)
	img := testImage(t, v1.Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo up; while :; do sleep 1; done"}, Env: []string{"PATH=/bin"}})
	ctx := context.Background()
	sb, stdout, _, console := startSandbox(t, ctx, e, img, nil)
	if err := sb.StartWorkload(ctx, nil, nil); err != nil {
		t.Fatalf("StartWorkload: %v\nconsole:\n%s", err, console.String())
	}
	waitForOutput(t, stdout, "up\n")

	// Stdin through a pipe: 100 KiB, several EXEC_STDIN frames, then its end.
	in := bytes.Repeat([]byte("0123456789abcdef\n"), 6000)
	var out, errOut syncBuffer
	code, err := sb.ExecWith(ctx, []string{"cat"}, ExecOptions{Stdin: bytes.NewReader(in)}, &out, &errOut)
	if err != nil || code != 0 || out.String() != string(in) {
		t.Fatalf("exec cat = %d, %v; %d bytes out (want %d), stderr %q", code, err, len(out.String()), len(in), errOut.String())
	}
	// Without Stdin, stdin is /dev/null as before.
	var none syncBuffer
	if code, err := sb.Exec(ctx, []string{"cat"}, &none, &errOut); err != nil || code != 0 || none.String() != "" {
		t.Fatalf("exec cat without stdin = %d, %v, %q", code, err, none.String())
	}

	// A terminal.
	script := terminalScript
	inR, inW := io.Pipe()
	defer inW.Close()
	resize := make(chan WindowSize)
	var tout, terr syncBuffer
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := sb.ExecWith(ctx, []string{"sh", "-c", script}, ExecOptions{Stdin: inR, TTY: &WindowSize{Rows: 24, Cols: 80}, Resize: resize}, &tout, &terr)
		done <- result{code, err}
	}()
	waitForOutput(t, &tout, "size 24 80\r\n")
	m := regexp.MustCompile(`pts (/dev/pts/[0-9]+)\r\n`).FindStringSubmatch(tout.String())
	if m == nil {
		t.Fatalf("tty printed no /dev/pts/N: %q", tout.String())
	}
	resize <- WindowSize{Rows: 50, Cols: 132}
	// The size changed once another exec in the same root sees it on
	// that terminal (the root's one devpts).
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var so, se syncBuffer
		code, err := sb.Exec(ctx, []string{"busybox", "stty", "-F", m[1], "size"}, &so, &se)
		if err == nil && code == 0 && so.String() == "50 132\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the exec's terminal was not resized in 3 minutes: busybox stty -F %s size: %d %v %q %q", m[1], code, err, so.String(), se.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := inW.Write([]byte("typed\n")); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.code != 5 {
		t.Fatalf("exec on a terminal = %d, %v; want 5\nconsole:\n%s", r.code, r.err, console.String())
	}
	want := "all-terminals\r\n" + m[0] + "size 24 80\r\ntyped\r\nsize 50 132 read typed\r\nto-stderr\r\n"
	if got := tout.String(); got != want {
		t.Errorf("terminal output %q, want %q", got, want)
	}
	if s := terr.String(); s != "" {
		t.Errorf("stderr %q, want nothing (merged into the terminal)", s)
	}
}
