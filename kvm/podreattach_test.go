package kvm

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// TestPodReattach: a pod VM whose host process let go of it (Detach, as a
// host service killed) is taken over by another (Reattach) with its
// containers: one that exited while no host watched comes back with its
// exit code; one that runs goes on printing into the new host's writer,
// takes execs and signals; the new host fills free slots and, once it
// removed the exited container, its slot; the pod stops as before.
func TestPodReattach(t *testing.T) {
	e := bootEnv(t)
	ctx := context.Background()
	img := testImage(t, v1.Config{Entrypoint: []string{"/bin/sh", "-c"}, Env: []string{"PATH=/bin"}})
	disk0, disk1 := buildDisk(t, img), buildDisk(t, img)
	runDir := t.TempDir()
	name := "podr123456789abcdef0123456789abc"
	sb, _, _, console := startSandbox(t, ctx, e, img, func(c *Config) {
		c.Name, c.Image, c.Pod, c.RunDir = name, disk0.File, true, runDir
	})
	if err := sb.StartWorkload(ctx, nil, nil); err != nil {
		t.Fatalf("StartWorkload: %v\nconsole:\n%s", err, console.String())
	}
	var out0, out1 syncBuffer
	if _, err := sb.StartContainer(ctx, channel.ContainerStart{Index: 0, Name: "zero", DiskDigest: disk0.Digest, DiskSize: disk0.Size,
		Args: []string{"/bin/sh", "-c", "trap 'exit 5' TERM; i=0; while :; do echo tick $i; i=$((i+1)); sleep 1; done"}}, &out0, io.Discard); err != nil {
		t.Fatalf("container 0: %v\nconsole:\n%s", err, console.String())
	}
	if err := sb.FillPodSlot(ctx, 1, disk1); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.StartContainer(ctx, channel.ContainerStart{Index: 1, Name: "one", DiskDigest: disk1.Digest, DiskSize: disk1.Size,
		Args: []string{"/bin/sh", "-c", "echo started; while ! test -e /tmp/stop; do sleep 1; done; exit 7"}}, &out1, io.Discard); err != nil {
		t.Fatalf("container 1: %v", err)
	}
	waitForOutput(t, &out0, "tick 1")
	waitForOutput(t, &out1, "started")
	// Container 1 is told to exit, and the host lets go at once: its exit
	// happens while no host holds the channel.
	if code, err := sb.ExecContainer(ctx, 1, []string{"sh", "-c", ": > /tmp/stop"}, nil, nil); err != nil || code != 0 {
		t.Fatalf("exec to stop container 1: %d %v", code, err)
	}
	p := sb.Persisted()
	sb.Detach()

	var next0, next1 syncBuffer
	cfg := Config{Name: name, RunDir: runDir, Pod: true, Stdout: io.Discard, Stderr: io.Discard, Logger: testLogger(t),
		ContainerOutput: func(i int) (io.Writer, io.Writer) {
			switch i {
			case 0:
				return &next0, io.Discard
			case 1:
				return &next1, io.Discard
			}
			return nil, nil
		}}
	rb, err := Reattach(ctx, cfg, p)
	if err != nil {
		t.Fatalf("Reattach: %v\nconsole:\n%s", err, console.String())
	}
	t.Cleanup(func() { rb.Close() })
	if got := rb.PodContainers(); len(got) != 2 {
		t.Fatalf("containers after the takeover: %v, want 0 and 1", got)
	}
	c1, err := rb.PodContainer(1)
	if err != nil {
		t.Fatal(err)
	}
	if code, err := c1.Wait(ctx, rb); err != nil || code != 7 {
		t.Errorf("container 1, exited while no host watched: %d %v, want 7", code, err)
	}
	c0, err := rb.PodContainer(0)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-c0.Done():
		t.Fatal("container 0 is reported ended after the takeover")
	default:
	}
	// Its output reaches the new host.
	waitForOutput(t, &next0, "tick ")
	var xo syncBuffer
	if code, err := rb.ExecContainer(ctx, 0, []string{"echo", "still here"}, &xo, nil); err != nil || code != 0 || xo.String() != "still here\n" {
		t.Errorf("exec after the takeover: %d %v %q", code, err, xo.String())
	}
	if _, err := rb.PodContainer(2); err == nil {
		t.Error("an unknown container is reported")
	}
	// The slots are QEMU's: the new host fills a free one and, once the
	// exited container 1 is removed, its slot too; a slot whose container
	// the agent reported is not refilled before that.
	if n := rb.PodSlots(); n != MaxPodSlots {
		t.Errorf("slots after the takeover: %d, want %d", n, MaxPodSlots)
	}
	if err := rb.FillPodSlot(ctx, 1, disk1); err == nil {
		t.Error("the slot of container 1, not removed, was refilled after the takeover")
	}
	if err := rb.RemoveContainer(ctx, 1); err != nil {
		t.Fatalf("RemoveContainer(1) after the takeover: %v", err)
	}
	for _, i := range []int{1, 2} {
		if err := rb.FillPodSlot(ctx, i, disk1); err != nil {
			t.Fatalf("filling slot %d after the takeover: %v", i, err)
		}
		var o syncBuffer
		c, err := rb.StartContainer(ctx, channel.ContainerStart{Index: i, Name: "later", DiskDigest: disk1.Digest, DiskSize: disk1.Size,
			Args: []string{"/bin/sh", "-c", "test -e /tmp/stop && echo old-root || echo new-container"}}, &o, io.Discard)
		if err != nil {
			t.Fatalf("a container in slot %d after the takeover: %v\nconsole:\n%s", i, err, console.String())
		}
		if code, err := c.Wait(ctx, rb); err != nil || code != 0 || o.String() != "new-container\n" {
			t.Errorf("container in slot %d after the takeover: %d %v %q", i, code, err, o.String())
		}
	}
	if err := rb.KillContainer(0, 15); err != nil {
		t.Fatal(err)
	}
	if code, err := c0.Wait(ctx, rb); err != nil || code != 5 {
		t.Errorf("container 0 after SIGTERM: %d %v, want its trap's 5", code, err)
	}
	if err := rb.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if code, err := rb.Wait(ctx); err != nil || code != 0 {
		t.Errorf("pod: %d %v", code, err)
	}
	if strings.Contains(next1.String(), "started") {
		t.Errorf("output from before the takeover reached the new host: %q", next1.String())
	}
}

// STATUS after REATTACH: a pod's agent lists its containers, each of
// which becomes the pod's (an exited one with its code, CONTAINER_EXIT
// then refused for it); every malformed or mismatched STATUS is refused.
func TestReattachStatus(t *testing.T) {
	reattaching := func(pod bool) *Sandbox {
		s := protoSandbox()
		s.cfg.Pod = pod
		s.state = stateReattaching
		s.reattachedCh = make(chan struct{})
		return s
	}
	status := func(st channel.Status) []byte { return jsonFrame(t, channel.TypeStatus, st) }
	running := channel.ContainerStatus{Index: 0, State: "running"}
	exited := channel.ContainerStatus{Index: 2, State: "exited", Code: 7}

	s := reattaching(true)
	if err := feed(s, status(channel.Status{State: "running", Pod: true, Containers: []channel.ContainerStatus{running, exited}}), false); err != nil {
		t.Fatal(err)
	}
	if got := len(s.PodContainers()); got != 2 || s.state != stateRunning {
		t.Fatalf("%d containers, state %v", got, s.state)
	}
	c2, err := s.PodContainer(2)
	if err != nil || !isClosed(c2.Done()) || c2.code != 7 {
		t.Fatalf("container 2: %v %+v", err, c2)
	}
	if err := feed(s, jsonFrame(t, channel.TypeContainerExit, channel.ContainerExit{Index: 2, Code: 7}), false); err == nil {
		t.Error("a second exit of container 2 is accepted")
	}
	if err := feed(s, jsonFrame(t, channel.TypeContainerExit, channel.ContainerExit{Index: 0, Code: 1}), false); err != nil {
		t.Errorf("the exit of running container 0: %v", err)
	}

	for _, tc := range []struct {
		name string
		pod  bool
		st   channel.Status
	}{
		{"a pod agent that lists no containers (it predates pod takeover)", true, channel.Status{State: "running"}},
		{"a pod's status from a sandbox that is not a pod", false, channel.Status{State: "running", Pod: true}},
		{"containers without pod", false, channel.Status{State: "running", Containers: []channel.ContainerStatus{running}}},
		{"an index out of range", true, channel.Status{State: "running", Pod: true, Containers: []channel.ContainerStatus{{Index: channel.MaxContainers, State: "running"}}}},
		{"a negative index", true, channel.Status{State: "running", Pod: true, Containers: []channel.ContainerStatus{{Index: -1, State: "running"}}}},
		{"an index twice", true, channel.Status{State: "running", Pod: true, Containers: []channel.ContainerStatus{running, running}}},
		{"an unknown container state", true, channel.Status{State: "running", Pod: true, Containers: []channel.ContainerStatus{{Index: 1, State: "paused"}}}},
		{"an exit code out of range", true, channel.Status{State: "running", Pod: true, Containers: []channel.ContainerStatus{{Index: 1, State: "exited", Code: 256}}}},
		{"an unknown workload state", false, channel.Status{State: "gone"}},
		{"an agent newer than this host", false, channel.Status{State: "running", Version: channel.Version + 1}},
		{"a version that never named itself in STATUS", false, channel.Status{State: "running", Version: 6}},
	} {
		s := reattaching(tc.pod)
		if err := feed(s, status(tc.st), false); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
		if isClosed(s.reattachedCh) {
			t.Errorf("%s: the takeover went on", tc.name)
		}
	}
}

// TestReattachOlderAgent: an agent taken over whose STATUS names no
// version (version 6 or older) is sent no frame of a later version — it
// would end its session on one — and the refusal says what to do; frames
// it knows go as before. One of this version gets every frame.
func TestReattachOlderAgent(t *testing.T) {
	for _, tc := range []struct {
		version int
		refused bool
	}{{0, true}, {channel.Version, false}} {
		s := protoSandbox()
		s.cfg.Pod = true
		s.state = stateReattaching
		s.reattachedCh = make(chan struct{})
		host, guest := net.Pipe()
		t.Cleanup(func() { host.Close(); guest.Close() })
		go io.Copy(io.Discard, guest)
		s.conn = host
		st := channel.Status{State: "running", Pod: true, Containers: []channel.ContainerStatus{{Index: 0, State: "running"}}, Version: tc.version}
		if err := feed(s, jsonFrame(t, channel.TypeStatus, st), false); err != nil {
			t.Fatal(err)
		}
		for _, f := range []struct {
			typ channel.Type
			v   any
		}{
			{channel.TypeContainerRemove, channel.ContainerRemove{Index: 1}},
			{channel.TypeExecSignal, channel.ExecSignal{ID: 1, Signal: 15}},
			{channel.TypeContainerResize, channel.ContainerResize{Index: 0, Rows: 24, Cols: 80}},
		} {
			err := s.write(f.typ, f.v, time.Second)
			if got := errors.Is(err, ErrAgentTooOld); got != tc.refused {
				t.Errorf("agent version %d, %s: %v, want refused=%v", tc.version, f.typ, err, tc.refused)
			}
			if tc.refused && (err == nil || !strings.Contains(err.Error(), "restart the sandbox")) {
				t.Errorf("the refusal does not say what to do: %v", err)
			}
		}
		if err := s.writeRaw(channel.TypeContainerStdin, channel.ContainerInput{Index: 0, Data: []byte("x")}.Encode(), time.Second); errors.Is(err, ErrAgentTooOld) != tc.refused {
			t.Errorf("agent version %d, CONTAINER_STDIN: %v, want refused=%v", tc.version, err, tc.refused)
		}
		if err := s.write(channel.TypeContainerKill, channel.ContainerKill{Index: 0, Signal: 15}, time.Second); err != nil {
			t.Errorf("agent version %d: CONTAINER_KILL, which every agent knows: %v", tc.version, err)
		}
	}
}

// FuzzReattachStatus feeds a pod (or not) being taken over whatever the
// guest may send: the containers it takes on are in range, exit codes too.
func FuzzReattachStatus(f *testing.F) {
	f.Add(jsonFrame(f, channel.TypeStatus, channel.Status{State: "running", Pod: true,
		Containers: []channel.ContainerStatus{{Index: 0, State: "running"}, {Index: 1, State: "exited", Code: 3}}}), true)
	f.Add(jsonFrame(f, channel.TypeStatus, channel.Status{State: "exited", Code: 2}), false)
	f.Fuzz(func(t *testing.T, in []byte, pod bool) {
		s := protoSandbox()
		s.cfg.Pod = pod
		s.state = stateReattaching
		s.reattachedCh = make(chan struct{})
		_ = feed(s, in, false)
		if !pod && len(s.pod.containers) > 0 {
			t.Fatal("containers taken on by a sandbox that is not a pod")
		}
		for i, c := range s.pod.containers {
			if i < 0 || i >= channel.MaxContainers || c.index != i || c.code < -1 || c.code > 255 {
				t.Fatalf("container %d accepted: %+v", i, c)
			}
		}
	})
}
