package kvm

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// realCgroup makes a sandbox cgroup on this host the way Start does, or
// skips naming what is missing.
func realCgroup(t *testing.T, memMiB int) *cgroup {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating cgroups needs root")
	}
	name := fmt.Sprintf("test-%d-%d", os.Getpid(), time.Now().UnixNano())
	cg, err := openCgroup("", name, 1, memMiB, AccelKVM)
	if err != nil {
		t.Skipf("no usable cgroup hierarchy here: %v", err)
	}
	t.Cleanup(func() {
		if err := cg.remove(); err != nil {
			t.Error(err)
		}
	})
	return cg
}

// TestCgroupPlacesAndLimits starts real processes through cgroup.start (as
// Start starts QEMU): the child is in the sandbox's cgroup from its first
// instruction, the launcher's thread is not, and the memory limit holds: a
// child that allocates past it is killed, one within it is not.
func TestCgroupPlacesAndLimits(t *testing.T) {
	const memMiB = 128 // memory.max: 128 MiB + 256 MiB of QEMU overhead (KVM)
	cg := realCgroup(t, memMiB)
	home, _ := os.ReadFile("/proc/thread-self/cgroup")

	// The child's view of its own cgroups, printed before it does anything else.
	cmd := exec.Command("cat", "/proc/self/cgroup")
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	var out strings.Builder
	cmd.Stdout = &out
	if err := cg.start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	dirs := cg.v1
	if cg.fd != nil {
		dirs = []string{cg.dir}
	}
	for _, d := range dirs {
		rel := d[strings.Index(d, "/bulwark/"):]
		if !strings.Contains(out.String(), rel) {
			t.Errorf("the child is not in %s:\n%s", d, out.String())
		}
	}
	runtime.LockOSThread()
	after, _ := os.ReadFile("/proc/thread-self/cgroup")
	runtime.UnlockOSThread()
	if strings.Contains(string(after), "/bulwark/") {
		t.Errorf("a launcher thread stayed in the sandbox's cgroup:\n%s\n(before:\n%s)", after, home)
	}

	for _, tc := range []struct {
		allocMiB int
		killed   bool
	}{
		{64, false},
		{memMiB + 256 + 128, true},
	} {
		t.Run(fmt.Sprintf("allocate %d MiB", tc.allocMiB), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAllocate$")
			cmd.Env = append(os.Environ(), "BULWARK_HELPER_ALLOC_MIB="+strconv.Itoa(tc.allocMiB))
			cmd.SysProcAttr = &syscall.SysProcAttr{}
			var out strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cg.start(cmd); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			var ee *exec.ExitError
			killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
			if killed != tc.killed {
				t.Fatalf("killed = %v (%v), want %v:\n%s", killed, err, tc.killed, out.String())
			}
			if !tc.killed && !strings.Contains(out.String(), "ALLOCATED") {
				t.Fatalf("the helper did not finish: %v\n%s", err, out.String())
			}
		})
	}
}

// TestHelperAllocate allocates and touches BULWARK_HELPER_ALLOC_MIB MiB when
// run by TestCgroupPlacesAndLimits; it does nothing in a normal test run.
func TestHelperAllocate(t *testing.T) {
	mib, _ := strconv.Atoi(os.Getenv("BULWARK_HELPER_ALLOC_MIB"))
	if mib == 0 {
		t.Skip("helper process for TestCgroupPlacesAndLimits")
	}
	var keep [][]byte
	for range mib {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		keep = append(keep, b)
	}
	fmt.Printf("ALLOCATED %d MiB\n", len(keep))
}

// TestCgroupLeftBehind: a sandbox cgroup left by a killed launcher (empty)
// does not stop a new sandbox of that name; one with a process in it does,
// saying so.
func TestCgroupLeftBehind(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating cgroups needs root")
	}
	name := fmt.Sprintf("test-stale-%d-%d", os.Getpid(), time.Now().UnixNano())
	stale, err := openCgroup("", name, 1, 128, AccelKVM)
	if err != nil {
		t.Skipf("no usable cgroup hierarchy here: %v", err)
	}
	// Not removed: as a killed launcher leaves it.
	cg, err := openCgroup("", name, 1, 128, AccelKVM)
	if err != nil {
		stale.remove()
		t.Fatalf("a new sandbox over an empty cgroup left behind: %v", err)
	}
	defer cg.remove()
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if err := cg.start(cmd); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if other, err := openCgroup("", name, 1, 128, AccelKVM); err == nil {
		other.remove()
		t.Fatal("a cgroup with a process in it was taken over")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Fatalf("got %v, want it to say the cgroup is in use", err)
	}
}

// TestSweepCgroups: an empty group older than the age is removed; a
// recent one, and one that holds something, are kept. On a plain
// directory (as tests point CgroupParent at) "holds something" is a file;
// on a real cgroup it is a process, tested below.
func TestSweepCgroups(t *testing.T) {
	parent := t.TempDir()
	old := time.Now().Add(-time.Hour)
	for _, d := range []string{"stale", "recent", "busy"} {
		if err := os.Mkdir(filepath.Join(parent, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(parent, "busy", "cgroup.procs"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"stale", "busy"} {
		if err := os.Chtimes(filepath.Join(parent, d), old, old); err != nil {
			t.Fatal(err)
		}
	}
	n, err := SweepCgroups(parent, time.Minute)
	if err != nil || n != 1 {
		t.Fatalf("removed %d (%v), want 1", n, err)
	}
	for d, want := range map[string]bool{"stale": false, "recent": true, "busy": true} {
		if _, err := os.Stat(filepath.Join(parent, d)); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", d, err == nil, want)
		}
	}
	if n, err := SweepCgroups("none", 0); n != 0 || err != nil {
		t.Errorf("none: %d %v", n, err)
	}
	if n, err := SweepCgroups(filepath.Join(parent, "missing"), 0); n != 0 || err != nil {
		t.Errorf("a missing parent: %d %v", n, err)
	}
}

// TestSweepCgroupsKeepsARunningSandbox: on this host's real hierarchy, a
// group with a process in it survives a sweep even when it is old enough,
// and is removed by one once the process has gone. The group is backdated
// and the sweep takes only groups older than an hour, so sandboxes that
// other tests start meanwhile are never in its way.
func TestSweepCgroupsKeepsARunningSandbox(t *testing.T) {
	cg := realCgroup(t, 64)
	cmd := exec.Command("sleep", "60")
	if err := cg.start(cmd); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	for _, d := range cg.dirs() {
		if err := os.Chtimes(d, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := SweepCgroups("", time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, d := range cg.dirs() {
		if _, err := os.Stat(d); err != nil {
			t.Fatalf("the sweep removed %s of a running process: %v", d, err)
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := SweepCgroups("", time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, d := range cg.dirs() {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s left after its process ended and a sweep: %v", d, err)
		}
	}
}
