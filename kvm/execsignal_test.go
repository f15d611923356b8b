package kvm

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/bulwark-project/bulwark/kvm/channel"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ExecOptions.Signals become EXEC_SIGNAL frames for the exec's id, after
// its EXEC; an invalid signal number is never sent; the exit code that
// follows is the caller's.
func TestExecSignalFrames(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	defer hostEnd.Close()
	defer guestEnd.Close()
	s := protoSandbox()
	s.conn, s.state, s.log = hostEnd, stateRunning, slog.New(slog.NewTextHandler(io.Discard, nil))
	sigs := make(chan int)
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := s.ExecWith(context.Background(), []string{"sleep", "600"}, ExecOptions{Signals: sigs}, io.Discard, io.Discard)
		done <- result{code, err}
	}()
	r := bufio.NewReader(guestEnd)
	typ, body, err := channel.ReadFrame(r)
	if err != nil || typ != channel.TypeExec {
		t.Fatalf("first frame %s: %v", typ, err)
	}
	var x channel.Exec
	if err := channel.Decode(typ, body, &x); err != nil {
		t.Fatal(err)
	}
	sigs <- 0  // not a signal: skipped
	sigs <- 65 // past SIGRTMAX: skipped
	sigs <- int(syscall.SIGTERM)
	typ, body, err = channel.ReadFrame(r)
	if err != nil || typ != channel.TypeExecSignal {
		t.Fatalf("frame %s %q: %v, want EXEC_SIGNAL", typ, body, err)
	}
	var m channel.ExecSignal
	if err := channel.Decode(typ, body, &m); err != nil || m != (channel.ExecSignal{ID: x.ID, Signal: 15}) {
		t.Fatalf("EXEC_SIGNAL %+v: %v, want exec %d signal 15", m, err, x.ID)
	}
	s.mu.Lock()
	err = s.handleExecFrame(channel.TypeExecExit, jsonFrame(t, channel.TypeExecExit, channel.ExecExit{ID: x.ID, Code: 143})[5:])
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if res := <-done; res.code != 143 || res.err != nil {
		t.Fatalf("exec = %d, %v; want 143", res.code, res.err)
	}
}

// TestExecSignal boots one sandbox and signals execs beside its workload
// through the guest's agent:
//   - a running sleep gets SIGTERM and ends with 143;
//   - a SIGTERM sent right behind the EXEC, before the command can have
//     started, is held by the agent and delivered: 143;
//   - the signal reaches the exec's process group: a shell's background
//     sleep goes with it (its /proc entry is gone, seen from another exec).
func TestExecSignal(t *testing.T) {
	e := bootEnv(t)
	img := testImage(t, v1.Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo up; while :; do sleep 1; done"}, Env: []string{"PATH=/bin"}})
	ctx := context.Background()
	sb, stdout, _, console := startSandbox(t, ctx, e, img, nil)
	if err := sb.StartWorkload(ctx, nil, nil); err != nil {
		t.Fatalf("StartWorkload: %v\nconsole:\n%s", err, console.String())
	}
	waitForOutput(t, stdout, "up\n")

	type result struct {
		code int
		err  error
	}
	run := func(args []string, out *syncBuffer, sigs chan int) <-chan result {
		done := make(chan result, 1)
		go func() {
			var errOut syncBuffer
			code, err := sb.ExecWith(ctx, args, ExecOptions{Signals: sigs}, out, &errOut)
			done <- result{code, err}
		}()
		return done
	}

	// Running, then signalled.
	var out syncBuffer
	sigs := make(chan int, 1)
	done := run([]string{"sh", "-c", "echo running; exec sleep 600"}, &out, sigs)
	waitForOutput(t, &out, "running\n")
	sigs <- int(syscall.SIGTERM)
	if r := <-done; r.err != nil || r.code != 143 {
		t.Fatalf("signalled sleep = %d, %v; want 143\nconsole:\n%s", r.code, r.err, console.String())
	}

	// Signalled at once: held until it runs.
	sigs = make(chan int, 1)
	sigs <- int(syscall.SIGTERM)
	if r := <-run([]string{"sleep", "600"}, &syncBuffer{}, sigs); r.err != nil || r.code != 143 {
		t.Fatalf("sleep signalled behind its EXEC = %d, %v; want 143", r.code, r.err)
	}

	// The whole group: the shell's background sleep ends too.
	out = syncBuffer{}
	sigs = make(chan int, 1)
	done = run([]string{"sh", "-c", "sleep 600 & echo \"bg $!\"; wait"}, &out, sigs)
	waitForOutput(t, &out, "\n")
	m := regexp.MustCompile(`bg ([0-9]+)\n`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("the shell printed %q", out.String())
	}
	var probe syncBuffer
	if code, err := sb.Exec(ctx, []string{"test", "-d", "/proc/" + m[1]}, &probe, &probe); code != 0 || err != nil {
		t.Fatalf("the background sleep %s does not run before the signal: %d, %v %q", m[1], code, err, probe.String())
	}
	sigs <- int(syscall.SIGTERM)
	if r := <-done; r.err != nil || r.code != 143 {
		t.Fatalf("signalled shell = %d, %v; want 143", r.code, r.err)
	}
	var ps syncBuffer
	if code, err := sb.Exec(ctx, []string{"sh", "-c", "for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; done"}, &ps, &ps); code != 0 || err != nil {
		t.Fatalf("listing processes: %d, %v", code, err)
	}
	if strings.Contains(ps.String(), "sleep 600") {
		t.Fatalf("a sleep 600 survived its exec's signal; processes:\n%s", ps.String())
	}
}
