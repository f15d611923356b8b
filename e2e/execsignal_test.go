package e2e

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testLauncherExecSignals: SIGTERM and SIGINT sent to a running
// `launcher exec` go to the command in the guest: it ends with 143 or
// 130, which is the launcher's exit code, and no sleep 600 is left in the
// guest. A command that ignores SIGINT gets the first two (its trap runs
// each time); the third stops the launcher waiting (exit 130, saying so)
// and the command runs on. Before, SIGINT or SIGTERM ended the launcher
// at once with 130 and left the command running unseen.
func testLauncherExecSignals(t *testing.T, e *env, id string) {
	t.Helper()
	guest := func() string {
		out, err := e.cmd("launcher", "exec", id, "--", "sh", "-c", `for p in /proc/[0-9]*; do cat $p/cmdline; echo; done`).CombinedOutput()
		if err != nil {
			t.Fatalf("listing the guest's processes: %v\n%s", err, out)
		}
		return string(out)
	}
	start := func(script, wait string) (*exec.Cmd, *syncBuffer, <-chan error) {
		t.Helper()
		c := e.cmd("launcher", "exec", id, "--", "sh", "-c", script)
		var out syncBuffer
		c.Stdout, c.Stderr = bufferWriter{&out}, bufferWriter{&out}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- c.Wait() }()
		waitOutput(t, &out, wait, 1)
		return c, &out, exited
	}
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGTERM, 143}, {syscall.SIGINT, 130}} {
		c, out, exited := start("echo up; exec sleep 600", "up\n")
		if err := c.Process.Signal(tc.sig); err != nil {
			t.Fatal(err)
		}
		err := <-exited
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != tc.code {
			t.Fatalf("launcher exec sent %s: %v, want exit code %d; it printed %q", tc.sig, err, tc.code, out.String())
		}
		if ps := guest(); strings.Contains(ps, sleeper) {
			t.Fatalf("after %s the exec'd sleep still runs in the guest:\n%s", tc.sig, strings.ReplaceAll(ps, "\x00", " "))
		}
	}

	// Ignored: two are forwarded (the trap says so), the third gives up.
	c, out, exited := start(`trap "echo got-int" INT; echo up; while :; do sleep 1; done`, "up\n")
	for n := 1; n <= 2; n++ {
		if err := c.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		waitOutput(t, out, "got-int\n", n)
	}
	if err := c.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := <-exited
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 || !strings.Contains(out.String(), "no longer waiting") {
		t.Fatalf("a third SIGINT: %v, want exit code 130 saying it gave up; it printed %q", err, out.String())
	}
	if ps := guest(); !strings.Contains(ps, "got-int") {
		t.Errorf("the command that ignores SIGINT should run on:\n%s", strings.ReplaceAll(ps, "\x00", " "))
	}
}

// waitOutput waits until out holds want n times.
func waitOutput(t *testing.T, out *syncBuffer, want string, n int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for strings.Count(out.String(), want) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%q did not come %d times in 3 minutes; got %q", want, n, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
