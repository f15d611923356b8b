package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// sleeper is the command line (/proc/N/cmdline) of the exec'd process
// these tests signal; no container's own process runs "sleep 600".
const sleeper = "sleep\x00600\x00"

// execSeq numbers the exec ids of processes listings.
var execSeq atomic.Int64

// processes lists the command lines of every process the guest shows in
// container id's /proc (through an exec of sh and cat), one per line, NUL
// between arguments. run runs a command in the container.
func processes(t *testing.T, run func(args ...string) ([]byte, error)) string {
	t.Helper()
	out, err := run("sh", "-c", `for p in /proc/[0-9]*; do cat $p/cmdline; echo; done`)
	if err != nil {
		t.Fatalf("listing the guest's processes: %v\n%s", err, out)
	}
	return string(out)
}

// testCtrExecKill signals an exec'd process through ctr, containerd and
// the shim's Kill with an ExecID (the host service's ExecInteractive
// signal, the guest's EXEC_SIGNAL), in container id of namespace ns:
//   - ctr tasks kill --exec-id --signal SIGTERM ends a running sleep,
//     whose ctr tasks exec then exits with 143, and the sleep is gone
//     from the guest's process list (it was there before);
//   - a kill of that exec once it finished and was deleted is refused as
//     not found.
//
// Before, the shim answered every Kill with an ExecID "not implemented".
func testCtrExecKill(t *testing.T, cd *containerd, ns, id string) {
	t.Helper()
	ctr := func(args ...string) *exec.Cmd {
		return exec.Command("ctr", append([]string{"-a", cd.sock, "-n", ns}, args...)...)
	}
	run := func(args ...string) ([]byte, error) {
		return ctr(append([]string{"tasks", "exec", "--exec-id", fmt.Sprintf("ps%d", execSeq.Add(1)), id}, args...)...).CombinedOutput()
	}
	c := ctr("tasks", "exec", "--exec-id", "sleeper", id, "sh", "-c", "echo up; exec sleep 600")
	var out syncBuffer
	c.Stdout, c.Stderr = bufferWriter{&out}, bufferWriter{&out}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(processes(t, run), sleeper) {
		if time.Now().After(deadline) {
			t.Fatalf("the exec'd sleep did not show in the guest in 3 minutes; ctr printed %q", out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if o, err := ctr("tasks", "kill", "--exec-id", "sleeper", "--signal", "SIGTERM", id).CombinedOutput(); err != nil {
		t.Fatalf("ctr tasks kill --exec-id: %v\n%s", err, o)
	}
	err := <-exited
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 143 {
		t.Fatalf("ctr tasks exec of the signalled sleep: %v, want exit status 143; it printed %q", err, out.String())
	}
	if ps := processes(t, run); strings.Contains(ps, sleeper) {
		t.Fatalf("the signalled sleep still runs in the guest:\n%s", strings.ReplaceAll(ps, "\x00", " "))
	}
	o, err := ctr("tasks", "kill", "--exec-id", "sleeper", id).CombinedOutput()
	if err == nil || !strings.Contains(string(o), "not found") {
		t.Errorf("ctr tasks kill of a finished exec: %v %s, want not found", err, o)
	}
}

// testCrictlExecTimeout: crictl exec --sync --timeout 3 (ExecSync, as an
// exec probe's timeout) of a sleep 600 returns
// once the timeout passed (containerd's CRI kills the exec with SIGKILL
// through the shim's Kill, waits for its exit, then deletes it), saying
// so, and the sleep is gone from the guest; containerd logged no failure
// to kill or delete the exec. Before, the Kill was "not implemented": the
// sleep ran on in the guest and containerd logged "Failed to delete exec
// process".
func testCrictlExecTimeout(t *testing.T, cd *containerd, id string) {
	t.Helper()
	crictl := func(args ...string) ([]byte, error) {
		// Bounded: a kill that does not work would leave crictl waiting
		// for the sleep's 600 s.
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		return exec.CommandContext(ctx, "crictl", append([]string{"--runtime-endpoint", "unix://" + cd.sock, "--image-endpoint", "unix://" + cd.sock, "--timeout", "300s"}, args...)...).CombinedOutput()
	}
	// crictl applies --timeout to ExecSync (--sync) only: a streaming
	// exec ignores it.
	out, err := crictl("exec", "--sync", "--timeout", "3", id, "sleep", "600")
	if err == nil || !bytes.Contains(bytes.ToLower(out), []byte("timeout")) {
		t.Fatalf("crictl exec --sync --timeout 3 sleep 600: %v %s, want a timeout", err, out)
	}
	ps := processes(t, func(args ...string) ([]byte, error) { return crictl(append([]string{"exec", id}, args...)...) })
	if strings.Contains(ps, sleeper) {
		t.Fatalf("the timed-out sleep still runs in the guest:\n%s", strings.ReplaceAll(ps, "\x00", " "))
	}
	if !strings.Contains(ps, "sleep") {
		t.Fatalf("the listing shows no container's sleep either: /proc is not the guest's?\n%s", strings.ReplaceAll(ps, "\x00", " "))
	}
	for _, bad := range []string{"Failed to delete exec process", "failed to kill exec"} {
		if strings.Contains(cd.log.String(), bad) {
			t.Errorf("containerd logged %q:\n%s", bad, cd.log.String())
		}
	}
}
