package kvm

import (
	"context"
	"io"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestSandboxTTY boots a sandbox whose workload has a terminal
// (Config.TTY, docker run -t) and input (-i): stdin, stdout and stderr
// are a terminal of the initial size, a Resize changes the size it
// reports, what is typed reaches it (echoed, as a terminal does), and its
// stderr arrives merged into Stdout. Resize refuses out-of-bound sizes
// before anything is sent.
func TestSandboxTTY(t *testing.T) {
	e := bootEnv(t)
	script := strings.Join([]string{
		`[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-terminals`,
		`echo "size $(/bin/busybox stty size)"`,
		`read line`,
		`echo "size $(/bin/busybox stty size) read $line"`,
		`echo to-stderr >&2`,
		`exit 3`,
	}, "\n")
	img := testImage(t, v1.Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{script}, Env: []string{"PATH=/bin"}})
	ctx := context.Background()
	inR, inW := io.Pipe()
	defer inW.Close()
	sb, stdout, stderr, console := startSandbox(t, ctx, e, img, func(c *Config) {
		c.Stdin = inR
		c.TTY = &WindowSize{Rows: 33, Cols: 101}
	})
	if err := sb.Resize(WindowSize{Rows: 40, Cols: 100}); err == nil {
		t.Fatal("Resize before the workload runs accepted")
	}
	if err := sb.StartWorkload(ctx, nil, nil); err != nil {
		t.Fatalf("StartWorkload: %v\nconsole:\n%s", err, console.String())
	}
	waitForOutput(t, stdout, "size 33 101\r\n")
	for _, bad := range []WindowSize{{Rows: 0, Cols: 80}, {Rows: 24, Cols: 10001}} {
		if err := sb.Resize(bad); err == nil || !strings.Contains(err.Error(), "terminal size") {
			t.Errorf("Resize(%+v) = %v, want a refusal of the size", bad, err)
		}
	}
	// The shell waits in read: RESIZE reaches the agent before the line.
	if err := sb.Resize(WindowSize{Rows: 50, Cols: 132}); err != nil {
		t.Fatal(err)
	}
	if _, err := inW.Write([]byte("typed\n")); err != nil {
		t.Fatal(err)
	}
	code, err := sb.Wait(ctx)
	if err != nil || code != 3 {
		t.Fatalf("Wait = %d, %v; want 3\nconsole:\n%s", code, err, console.String())
	}
	want := "all-terminals\r\nsize 33 101\r\ntyped\r\nsize 50 132 read typed\r\nto-stderr\r\n"
	if got := stdout.String(); got != want {
		t.Errorf("terminal output %q, want %q", got, want)
	}
	if s := stderr.String(); s != "" {
		t.Errorf("stderr %q, want nothing (merged into the terminal)", s)
	}
}

// TestResizeWithoutTTY: a sandbox without a terminal refuses Resize.
func TestResizeWithoutTTY(t *testing.T) {
	sb := &Sandbox{}
	if err := sb.Resize(WindowSize{Rows: 24, Cols: 80}); err == nil || !strings.Contains(err.Error(), "no terminal") {
		t.Fatalf("Resize = %v, want a refusal: no terminal", err)
	}
}
