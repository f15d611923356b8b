package kvm

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// TestPodContainerTerminal boots one pod VM and runs containers whose
// own process has a terminal and stdin: on a terminal (tty names a pts
// of the container's devpts, stty size reports the initial size, then the
// size CONTAINER_RESIZE set; a typed line is echoed and read; stderr is
// merged into the terminal's output), and on a stdin pipe (cat gives
// back 100 KiB fed in several CONTAINER_STDIN frames and exits at their
// end). Input and resizes a container did not ask for, or after its end
// or exit, are refused on the host.
func TestPodContainerTerminal(t *testing.T) {
	e := bootEnv(t)
	ctx := context.Background()
	img := testImage(t, v1.Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo image"}, Env: []string{"PATH=/bin"}})
	disk0, disk1 := buildDisk(t, img), buildDisk(t, img)
	sb, _, _, console := startSandbox(t, ctx, e, img, func(c *Config) {
		c.Name = "podtty0123456789abcdef0123456789"
		c.Image = disk0.File
		c.Pod = true
	})
	if err := sb.StartWorkload(ctx, nil, nil); err != nil {
		t.Fatalf("StartWorkload: %v\nconsole:\n%s", err, console.String())
	}

	// Container 0 on a terminal, with stdin.
	var tout, terr syncBuffer
	c0, err := sb.StartContainer(ctx, channel.ContainerStart{Index: 0, Name: "tty", DiskDigest: disk0.Digest, DiskSize: disk0.Size,
		Args: []string{"/bin/sh", "-c", terminalScript}, Stdin: true, TTY: &WindowSize{Rows: 24, Cols: 80}}, &tout, &terr)
	if err != nil {
		t.Fatalf("container 0: %v\nconsole:\n%s", err, console.String())
	}
	if !c0.HasStdin() || !c0.HasTTY() {
		t.Errorf("container 0: HasStdin %v, HasTTY %v", c0.HasStdin(), c0.HasTTY())
	}
	waitForOutput(t, &tout, "size 24 80\r\n")
	m := regexp.MustCompile(`pts /dev/pts/[0-9]+\r\n`).FindString(tout.String())
	if m == "" {
		t.Fatalf("tty printed no /dev/pts/N: %q", tout.String())
	}
	if err := sb.ResizeContainer(0, WindowSize{Rows: 0, Cols: 80}); err == nil {
		t.Error("a resize to 0 rows was sent")
	}
	// The resize reaches the agent before the typed line (one channel,
	// read in order): the line's reader sees the new size.
	if err := sb.ResizeContainer(0, WindowSize{Rows: 50, Cols: 132}); err != nil {
		t.Fatal(err)
	}
	if err := sb.ContainerStdin(0, []byte("typed\n")); err != nil {
		t.Fatal(err)
	}
	if code, err := c0.Wait(ctx, sb); err != nil || code != 5 {
		t.Fatalf("container on a terminal = %d, %v; want 5\nconsole:\n%s", code, err, console.String())
	}
	want := "all-terminals\r\n" + m + "size 24 80\r\ntyped\r\nsize 50 132 read typed\r\nto-stderr\r\n"
	if got := tout.String(); got != want {
		t.Errorf("terminal output %q, want %q", got, want)
	}
	if s := terr.String(); s != "" {
		t.Errorf("stderr %q, want nothing (merged into the terminal)", s)
	}
	if err := sb.ContainerStdin(0, []byte("late\n")); !errors.Is(err, ErrContainerExited) {
		t.Errorf("input after the container exited: %v, want ErrContainerExited", err)
	}

	// Container 1 with stdin on a pipe: cat.
	if err := sb.FillPodSlot(ctx, 1, disk1); err != nil {
		t.Fatal(err)
	}
	var cout, cerr syncBuffer
	c1, err := sb.StartContainer(ctx, channel.ContainerStart{Index: 1, Name: "cat", DiskDigest: disk1.Digest, DiskSize: disk1.Size,
		Args: []string{"cat"}, Stdin: true}, &cout, &cerr)
	if err != nil {
		t.Fatalf("container 1: %v\nconsole:\n%s", err, console.String())
	}
	if err := sb.ResizeContainer(1, WindowSize{Rows: 50, Cols: 132}); err == nil || !strings.Contains(err.Error(), "no terminal") {
		t.Errorf("a resize of a container without a terminal: %v", err)
	}
	if err := sb.ContainerStdin(7, []byte("x")); err == nil {
		t.Error("input for a container the pod does not have was sent")
	}
	in := bytes.Repeat([]byte("0123456789abcdef\n"), 6000) // 100 KiB: 4 frames
	if err := sb.ContainerStdin(1, in); err != nil {
		t.Fatal(err)
	}
	if err := sb.CloseContainerStdin(1); err != nil {
		t.Fatal(err)
	}
	if err := sb.CloseContainerStdin(1); err != nil {
		t.Errorf("a second end of input: %v", err)
	}
	if err := sb.ContainerStdin(1, []byte("after the end")); err == nil || !strings.Contains(err.Error(), "after its end") {
		t.Errorf("input after its end: %v", err)
	}
	if code, err := c1.Wait(ctx, sb); err != nil || code != 0 {
		t.Fatalf("cat = %d, %v (stderr %q)", code, err, cerr.String())
	}
	if got := cout.String(); got != string(in) {
		t.Errorf("cat gave back %d bytes, want %d", len(got), len(in))
	}
	if err := sb.Stop(0); err != nil {
		t.Fatal(err)
	}
	if code, err := sb.Wait(ctx); err != nil || code != 0 {
		t.Errorf("pod: %d %v", code, err)
	}
}
