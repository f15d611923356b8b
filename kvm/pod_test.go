package kvm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// TestPodSandboxContainers boots one pod VM and runs two containers in it
// at once, each in its own root from its own image disk (the second from
// an image slot filled after boot, its digest checked by the agent), with
// the spec's arguments, environment, directory and user; an exec runs in
// the second's root; killing one leaves the other running; a slot whose
// disk does not match the digest the host sends is refused and nothing of
// it runs; stopping the pod ends the VM with every container's exit
// reported.
func TestPodSandboxContainers(t *testing.T) {
	e := bootEnv(t)
	ctx := context.Background()
	img0 := testImage(t, v1.Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo image-zero"}, Env: []string{"PATH=/bin", "WHO=zero"}})
	img1 := testImage(t, v1.Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo image-one"}, Env: []string{"PATH=/bin", "WHO=one"}, User: "app"})
	disk0 := buildDisk(t, img0)
	disk1 := buildDisk(t, img1)
	disk2 := buildDisk(t, img1) // slot 2's: the same image, a disk of its own
	sb, _, _, console := startSandbox(t, ctx, e, img0, func(c *Config) {
		c.Name = "pod0123456789abcdef0123456789abcd"
		c.Image = disk0.File
		c.Pod = true
	})
	if err := sb.StartWorkload(ctx, nil, nil); err != nil {
		t.Fatalf("StartWorkload: %v\nconsole:\n%s", err, console.String())
	}
	var out0, out1, err0, err1 syncBuffer
	// Container 0 from the launch's disk: it marks its root and runs on.
	c0, err := sb.StartContainer(ctx, channel.ContainerStart{Index: 0, Name: "zero", DiskDigest: disk0.Digest, DiskSize: disk0.Size,
		Args: []string{"/bin/sh", "-c", "echo mine > /root-zero; echo who=$WHO extra=$EXTRA uid=$(id -u) pwd=$(pwd); echo started; while :; do sleep 1; done"},
		Env:  []string{"EXTRA=x"}, WorkingDir: "/srv"}, &out0, &err0)
	if err != nil {
		t.Fatalf("container 0: %v\nconsole:\n%s", err, console.String())
	}
	waitForOutput(t, &out0, "started")
	// Container 1 from a slot filled now.
	if err := sb.FillPodSlot(ctx, 1, disk1); err != nil {
		t.Fatal(err)
	}
	if err := sb.FillPodSlot(ctx, 1, disk1); err == nil {
		t.Fatal("a slot filled twice")
	}
	c1, err := sb.StartContainer(ctx, channel.ContainerStart{Index: 1, Name: "one", DiskDigest: disk1.Digest, DiskSize: disk1.Size,
		// It leaves a process of another session behind, holding its output.
		Args: []string{"/bin/sh", "-c", "test -e /root-zero && echo shared-root || echo own-root; echo who=$WHO uid=$(id -u); /bin/busybox setsid sleep 4242 & echo started; while :; do sleep 1; done"}}, &out1, &err1)
	if err != nil {
		t.Fatalf("container 1: %v\nconsole:\n%s", err, console.String())
	}
	waitForOutput(t, &out1, "started")
	if got := out0.String(); !strings.Contains(got, "who=zero extra=x uid=0 pwd=/srv\n") {
		t.Errorf("container 0 printed %q", got)
	}
	if got := out1.String(); !strings.Contains(got, "own-root\nwho=one uid=1000\n") {
		t.Errorf("container 1 printed %q (stderr %q)", got, err1.String())
	}
	// An exec in container 1's root.
	var xo, xe syncBuffer
	code, err := sb.ExecContainer(ctx, 1, []string{"sh", "-c", "echo exec-who=$WHO; test -e /root-zero || echo exec-own-root"}, &xo, &xe)
	if err != nil || code != 0 || xo.String() != "exec-who=one\nexec-own-root\n" {
		t.Errorf("exec in container 1: %d %v %q %q", code, err, xo.String(), xe.String())
	}
	// A slot whose bytes are not the digest's: refused, nothing runs.
	if err := sb.FillPodSlot(ctx, 2, disk2); err != nil {
		t.Fatal(err)
	}
	_, err = sb.StartContainer(ctx, channel.ContainerStart{Index: 2, Name: "forged", DiskDigest: disk0.Digest, DiskSize: disk0.Size}, nil, nil)
	var ge *GuestError
	if !errors.As(err, &ge) || !strings.Contains(err.Error(), "not the one the host measured") {
		t.Errorf("a mismatching disk: %v", err)
	}
	// A running container is not removed; the slot of one that failed
	// to start cannot be refilled before it is removed.
	if err := sb.RemoveContainer(ctx, 1); err == nil || !strings.Contains(err.Error(), "still runs") {
		t.Errorf("RemoveContainer of a running container: %v", err)
	}
	if err := sb.FillPodSlot(ctx, 2, disk0); err == nil || !strings.Contains(err.Error(), "remove the container first") {
		t.Errorf("FillPodSlot of a slot whose container failed, not removed: %v", err)
	}
	// Killing container 1 leaves container 0 running, and ends what
	// container 1 left behind in another session.
	if err := sb.KillContainer(1, 9); err != nil {
		t.Fatal(err)
	}
	if code, err := c1.Wait(ctx, sb); err != nil || code != 137 {
		t.Errorf("container 1 killed: %d %v", code, err)
	}
	// (-s: a process that exits between the glob and the read is no error.)
	var ps syncBuffer
	if code, err := sb.ExecContainer(ctx, 0, []string{"sh", "-c", "grep -ls '424[2]' /proc/[0-9]*/cmdline || echo none-left"}, &ps, &ps); err != nil || code != 0 || ps.String() != "none-left\n" {
		t.Errorf("what container 1 left running after its end: %d %v %q", code, err, ps.String())
	}
	slotDisks := map[int]*ImageDisk{1: disk1, 2: disk2}
	for i, d := range slotDisks {
		if !qemuHolds(t, sb.PID(), d.File) {
			t.Errorf("QEMU does not hold slot %d's image", i)
		}
	}
	// Both slots are reused: removed, then refilled with another image,
	// which the guest reads afresh (not the blocks it cached).
	for _, i := range []int{1, 2} {
		if err := sb.RemoveContainer(ctx, i); err != nil {
			t.Fatalf("RemoveContainer(%d): %v\nconsole:\n%s", i, err, console.String())
		}
		if err := sb.RemoveContainer(ctx, i); err != nil {
			t.Errorf("RemoveContainer(%d) again: %v", i, err)
		}
		if qemuHolds(t, sb.PID(), slotDisks[i].File) {
			t.Errorf("QEMU still holds slot %d's image after the slot was emptied: the removed image's memory is not freed", i)
		}
		if i == 1 && !qemuHolds(t, sb.PID(), disk2.File) {
			t.Error("emptying slot 1 let go of slot 2's image")
		}
		if err := sb.FillPodSlot(ctx, i, disk0); err != nil {
			t.Fatalf("refilling slot %d: %v", i, err)
		}
		var o, e syncBuffer
		c, err := sb.StartContainer(ctx, channel.ContainerStart{Index: i, Name: "again", DiskDigest: disk0.Digest, DiskSize: disk0.Size,
			Args: []string{"/bin/sh", "-c", "echo who=$WHO; test -e /root-zero && echo old-upper || echo fresh-root"}}, &o, &e)
		if err != nil {
			t.Fatalf("a container in slot %d reused: %v\nconsole:\n%s", i, err, console.String())
		}
		if code, err := c.Wait(ctx, sb); err != nil || code != 0 || o.String() != "who=zero\nfresh-root\n" {
			t.Errorf("the container in slot %d reused: %d %v %q %q", i, code, err, o.String(), e.String())
		}
	}
	if code, err := sb.ExecContainer(ctx, 0, []string{"true"}, nil, nil); err != nil || code != 0 {
		t.Errorf("container 0 after container 1's end: %d %v", code, err)
	}
	select {
	case <-c0.Done():
		t.Fatal("container 0 ended with container 1")
	default:
	}
	// Stopping the pod: container 0 gets SIGTERM; the VM ends.
	if err := sb.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if code, err := c0.Wait(ctx, sb); err != nil || code != 143 {
		t.Errorf("container 0 at the pod's stop: %d %v", code, err)
	}
	if code, err := sb.Wait(ctx); err != nil || code != 0 {
		t.Errorf("pod: %d %v\nconsole:\n%s", code, err, console.String())
	}
}

// TestPodClone: a pod's template (Config.Pod) has its image slots in its
// machine and recipe. A pod cloned from it runs its first container from
// its own image disk and another from its LAST slot — its own memfd,
// filled after the resume, sealed — in that container's own root; the
// template's RAM is the bytes hashed afterwards. A pod's template starts
// no plain clone and a plain template no pod: the recipes differ, and
// the refusal says which template to make.
func TestPodClone(t *testing.T) {
	e := bootEnv(t)
	ctx := context.Background()
	cfg := templateConfig(t, e)
	cfg.Pod = true
	var console syncBuffer
	cfg.Console = &console
	dir := filepath.Join(t.TempDir(), "pods")
	info, err := CreateTemplate(ctx, cfg, dir, "pods")
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, console.String())
	}
	if info.Recipe.PodSlots != MaxPodSlots {
		t.Fatalf("the pod template's recipe has %d pod slots, want %d", info.Recipe.PodSlots, MaxPodSlots)
	}
	tpl, err := LoadTemplate(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tpl.Close()
	img0 := testImage(t, v1.Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo image-zero"}, Env: []string{"PATH=/bin", "WHO=zero"}})
	img1 := testImage(t, v1.Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo image-one"}, Env: []string{"PATH=/bin", "WHO=one"}})
	disk0, disk1 := buildDisk(t, img0), buildDisk(t, img1)

	// Mismatched recipes are refused before QEMU starts.
	plain := templateConfig(t, e)
	plain.Template, plain.Image = tpl, disk0.File
	if sb, err := Start(ctx, plain); err == nil {
		sb.Close()
		t.Error("a plain clone of a pod's template started")
	} else if !strings.Contains(err.Error(), "pod image slots: the template is a pod's (15 slots, made with --pod), this launch is not a pod") {
		t.Errorf("a plain clone of a pod's template: %v", err)
	}
	plainDir, _ := sharedTemplate(t)
	plainTpl, err := LoadTemplate(plainDir)
	if err != nil {
		t.Fatal(err)
	}
	defer plainTpl.Close()
	wrong := templateConfig(t, e)
	wrong.Template, wrong.Image, wrong.Pod = plainTpl, disk0.File, true
	if sb, err := Start(ctx, wrong); err == nil {
		sb.Close()
		t.Error("a pod cloned from a plain template started")
	} else if !strings.Contains(err.Error(), "pod image slots: the template has none (made without --pod), this launch is a pod's (15 slots)") || !strings.Contains(err.Error(), "launcher template create --pod") {
		t.Errorf("a pod cloned from a plain template: %v", err)
	}

	pc := templateConfig(t, e)
	var pconsole syncBuffer
	pc.Template, pc.Image, pc.Pod, pc.Name, pc.Console = tpl, disk0.File, true, "podclone", &pconsole
	sb, err := Start(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if n := sb.PodSlots(); n != MaxPodSlots {
		t.Errorf("the clone has %d pod slots, want %d", n, MaxPodSlots)
	}
	if err := sb.StartWorkload(ctx, nil, nil); err != nil {
		t.Fatalf("StartWorkload: %v\nconsole:\n%s", err, pconsole.String())
	}
	var out0, out1 syncBuffer
	c0, err := sb.StartContainer(ctx, channel.ContainerStart{Index: 0, Name: "zero", DiskDigest: disk0.Digest, DiskSize: disk0.Size,
		Args: []string{"/bin/sh", "-c", "echo mine > /root-zero; echo who=$WHO host=$(hostname); echo started; while :; do sleep 1; done"}}, &out0, nil)
	if err != nil {
		t.Fatalf("container 0: %v\nconsole:\n%s", err, pconsole.String())
	}
	waitForOutput(t, &out0, "started")
	last := sb.PodSlots()
	if err := sb.FillPodSlot(ctx, last+1, disk1); err == nil {
		t.Error("a slot past the last was filled")
	}
	if err := sb.FillPodSlot(ctx, last, disk1); err != nil {
		t.Fatal(err)
	}
	c1, err := sb.StartContainer(ctx, channel.ContainerStart{Index: last, Name: "one", DiskDigest: disk1.Digest, DiskSize: disk1.Size,
		Args: []string{"/bin/sh", "-c", "test -e /root-zero && echo shared-root || echo own-root; echo who=$WHO; echo started"}}, &out1, nil)
	if err != nil {
		t.Fatalf("container %d: %v\nconsole:\n%s", last, err, pconsole.String())
	}
	if code, err := c1.Wait(ctx, sb); err != nil || code != 0 {
		t.Errorf("container %d: exit %d, %v", last, code, err)
	}
	if got := out0.String(); !strings.Contains(got, "who=zero host=podclone\n") {
		t.Errorf("container 0 printed %q", got)
	}
	if got := out1.String(); got != "own-root\nwho=one\nstarted\n" {
		t.Errorf("container %d printed %q", last, got)
	}
	if err := sb.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if code, err := c0.Wait(ctx, sb); err != nil || code != 143 {
		t.Errorf("container 0 at the pod's stop: %d %v", code, err)
	}
	if digest, err := copySparse(nil, tpl.ram, tpl.Info.RAM.Size); err != nil || digest != tpl.Info.RAM.Digest {
		t.Errorf("the template's RAM after the clone: %s, %v", digest, err)
	}
}

// qemuHolds reports whether QEMU (pid) holds a descriptor of f's file.
func qemuHolds(t *testing.T, pid int, f *os.File) bool {
	t.Helper()
	want, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if st, err := os.Stat(filepath.Join(dir, e.Name())); err == nil && os.SameFile(st, want) {
			return true
		}
	}
	return false
}

// TestCheckSealed: a pod slot takes only a disk that can never change —
// sealed against writes, growing, shrinking and more seals — of the
// slot's size.
func TestCheckSealed(t *testing.T) {
	sealed, err := sealedZeros("t", DiskSlotSize)
	if err != nil {
		t.Fatal(err)
	}
	defer sealed.Close()
	if err := checkSealed(sealed); err != nil {
		t.Errorf("a sealed disk of the slot's size: %v", err)
	}
	open, err := zeroMemfd("t", DiskSlotSize)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if _, err := unix.FcntlInt(open.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL); err != nil {
		t.Fatal(err)
	}
	if err := checkSealed(open); err == nil || !strings.Contains(err.Error(), "not sealed") {
		t.Errorf("a disk that can still be written: %v", err)
	}
	small, err := sealedZeros("t", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	if err := checkSealed(small); err == nil || !strings.Contains(err.Error(), "not the slot's") {
		t.Errorf("a disk smaller than the slot: %v", err)
	}
}

// RemoveContainer refuses before it sends anything: a sandbox that is
// not a pod, a pod not running, a container that runs or has not
// started, and one being removed already.
func TestRemoveContainerRefuses(t *testing.T) {
	pod := func(state guestState) *Sandbox {
		s := protoSandbox()
		s.cfg.Pod, s.state = true, state
		return s
	}
	runs := pod(stateRunning)
	runs.pod.containers = map[int]*Container{1: {seen: true, done: make(chan struct{})}, 2: {done: make(chan struct{})}}
	going := pod(stateRunning)
	going.pod.removing = map[int]chan channel.ContainerRemoved{3: make(chan channel.ContainerRemoved, 1)}
	plain := protoSandbox()
	plain.state = stateRunning
	for _, tc := range []struct {
		name  string
		s     *Sandbox
		index int
		want  string
	}{
		{"not a pod", plain, 1, "not a pod"},
		{"a pod not running", pod(stateExited), 1, "not running"},
		{"a running container", runs, 1, "still runs"},
		{"a container starting", runs, 2, "still runs"},
		{"a container being removed", going, 3, "being removed"},
		{"an index out of range", runs, channel.MaxContainers, "index"},
	} {
		err := tc.s.RemoveContainer(context.Background(), tc.index)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
