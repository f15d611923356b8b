package kvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// MaxPodSlots bounds the container image slots a pod sandbox boots with
// (Config.Pod): with the launch's own image, a pod runs at most
// 1+PodSlots() containers over its life. A pod has MaxPodSlots unless its
// other devices leave fewer of the microvm's virtio transports free
// (podSlotCount): a template and its clones, and a cold pod without
// volumes, have all of them; a cold pod with every volume and scratch
// disk and a network has 8. The bound is the guest protocol's: container
// indexes are 0..channel.MaxContainers-1 (the transports would allow 17).
// An empty slot costs no host memory for its bytes (a hole), but the
// guest kernel's state for one more disk: ≈ 0.7 MiB of guest RAM each
// (measured here: 15 slots vs 4 took 7.9 MiB more guest memory, 10.7 MiB
// more QEMU RSS; virtio-mmio offers 1024-entry queues, and blk-mq
// allocates requests for all of them).
const MaxPodSlots = channel.MaxContainers - 1

// microvmTransports is the number of virtio-mmio transports of QEMU's
// microvm machine: 24 with its second IOAPIC, which it has by default
// (measured with QEMU 7.2: a 25th virtio device finds no bus). Every
// virtio device of a sandbox takes one.
const microvmTransports = 24

// podSlotCount is how many image slots a pod sandbox whose QEMU command
// line would otherwise be spec's gets: MaxPodSlots, or the transports its
// other virtio devices (channel, RNG, image disk, volumes, scratch disks,
// network) leave.
func podSlotCount(spec qemuSpec) int {
	spec.podSlots = 0
	return max(0, min(MaxPodSlots, microvmTransports-virtioTransports(qemuArgs(spec))))
}

// virtioTransports counts the virtio-mmio devices on a QEMU command line.
func virtioTransports(args []string) int {
	n := 0
	for i, a := range args {
		if a == "-device" && i+1 < len(args) {
			dev, _, _ := strings.Cut(args[i+1], ",")
			if strings.HasPrefix(dev, "virtio-") && strings.HasSuffix(dev, "-device") {
				n++
			}
		}
	}
	return n
}

// The guest's disk slot size is the one the agent bounds a disk by.
var _ [DiskSlotSize - channel.DiskSlotBytes]struct{}
var _ [channel.DiskSlotBytes - DiskSlotSize]struct{}

// podState is a pod sandbox's containers: the image slots the VM booted
// with, which hold an image (filled: from FillPodSlot until
// RemoveContainer empties it again), and the containers started. Under
// Sandbox.mu.
type podState struct {
	n          int    // image slots the pod booted with
	filled     []bool // by index 0..n (0 unused)
	ended      bool   // the sandbox was closed: slots are no longer changed
	containers map[int]*Container
	removing   map[int]chan channel.ContainerRemoved // CONTAINER_REMOVE sent, by index
}

// Container is a container of a pod sandbox (Sandbox.StartContainer).
type Container struct {
	index          int
	stdout, stderr io.Writer
	started        chan channel.ContainerStarted
	seen           bool          // CONTAINER_STARTED came without error
	done           chan struct{} // closed on CONTAINER_EXIT
	code           int
	io             containerIO // its stdin and terminal (podtty.go)
}

// isFilled reports whether slot index holds an image.
func (p *podState) isFilled(index int) bool {
	return index > 0 && index < len(p.filled) && p.filled[index]
}

func (s *Sandbox) closePodSlots() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pod.ended = true
}

// PodSlots is the number of container image slots the pod booted with
// (0 for a sandbox that is not a pod): FillPodSlot takes 1..PodSlots.
func (s *Sandbox) PodSlots() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pod.n
}

// FillPodSlot puts disk's erofs image in the pod's image slot index
// (1..PodSlots): its memfd, sealed against every change before its digest
// was taken (BuildImageDisk; checked), swapped in over QMP (podslot.go):
// QEMU holds its own descriptor, so the caller may close disk. A slot holds one
// image until RemoveContainer has the agent forget the slot's container
// and empties it: a running container's disk never changes under it.
func (s *Sandbox) FillPodSlot(ctx context.Context, index int, disk *ImageDisk) error {
	s.mu.Lock()
	switch {
	case !s.cfg.Pod:
		s.mu.Unlock()
		return errors.New("kvm: not a pod sandbox")
	case s.pod.ended || isClosed(s.exited):
		s.mu.Unlock()
		return errors.New("kvm: the pod has ended")
	case index < 1 || index > s.pod.n:
		n := s.pod.n
		s.mu.Unlock()
		return fmt.Errorf("kvm: pod slot %d: the pod has slots 1..%d", index, n)
	}
	if s.pod.filled == nil {
		s.pod.filled = make([]bool, channel.MaxContainers)
	}
	if s.pod.filled[index] || s.pod.containers[index] != nil {
		s.mu.Unlock()
		return fmt.Errorf("kvm: pod slot %d holds a container's image already (remove the container first)", index)
	}
	s.pod.filled[index] = true // taken while it is filled
	s.mu.Unlock()
	ok := false
	defer func() {
		if !ok {
			s.mu.Lock()
			s.pod.filled[index] = false
			s.mu.Unlock()
		}
	}()
	if disk.Size <= 0 || disk.Size > DiskSlotSize {
		return fmt.Errorf("kvm: pod slot %d: a disk of %d bytes", index, disk.Size)
	}
	if err := checkSealed(disk.File); err != nil {
		return fmt.Errorf("kvm: pod slot %d: %w", index, err)
	}
	if err := s.swapSlot(ctx, index, disk.File); err != nil {
		return fmt.Errorf("kvm: %w", err)
	}
	ok = true
	return nil
}

// RemoveContainer has the agent forget container index of the pod, which
// must have ended (or failed to start): what still runs in its root is
// killed, its root and disk unmounted. Its slot is then emptied, ready
// for another container's image (FillPodSlot). Container 0 runs from the
// launch's own disk: it is forgotten, but no slot is freed.
func (s *Sandbox) RemoveContainer(ctx context.Context, index int) error {
	r := channel.ContainerRemove{Index: index}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("kvm: %w", err)
	}
	s.mu.Lock()
	c := s.pod.containers[index]
	switch {
	case !s.cfg.Pod:
		s.mu.Unlock()
		return errors.New("kvm: not a pod sandbox")
	case !s.runningLocked():
		st := s.state
		s.mu.Unlock()
		return fmt.Errorf("kvm: the pod is not running (the guest is %s)", st)
	case c != nil && (!c.seen || !isClosed(c.done)):
		s.mu.Unlock()
		return fmt.Errorf("kvm: container %d still runs: kill it first", index)
	case s.pod.removing[index] != nil:
		s.mu.Unlock()
		return fmt.Errorf("kvm: container %d is being removed", index)
	}
	ch := make(chan channel.ContainerRemoved, 1)
	if s.pod.removing == nil {
		s.pod.removing = map[int]chan channel.ContainerRemoved{}
	}
	s.pod.removing[index] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pod.removing, index)
		s.mu.Unlock()
	}()
	if err := s.write(channel.TypeContainerRemove, r, 5*time.Second); err != nil {
		return err
	}
	select {
	case rd := <-ch:
		if rd.Error != "" {
			return &GuestError{Message: rd.Error}
		}
	case <-s.exited:
		return s.endError("the pod ended while its container was removed")
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	delete(s.pod.containers, index)
	filled := s.pod.isFilled(index)
	s.mu.Unlock()
	if filled {
		// Nothing in the guest reads the slot: its image goes, and with
		// it the memory it took in QEMU.
		if err := s.swapSlot(ctx, index, nil); err != nil {
			s.log.Warn("emptying a pod slot; it is refilled with the next container's image", "slot", index, "err", err)
		}
		s.mu.Lock()
		s.pod.filled[index] = false
		s.mu.Unlock()
	}
	return nil
}

// StartContainer has the agent run a container of the pod (cs: its slot,
// its disk's digest and size, its command and settings), its output going
// to stdout and stderr, and returns once its process exists. An error
// from the guest (a disk that does not match its digest, a command not
// found) means nothing of it runs.
func (s *Sandbox) StartContainer(ctx context.Context, cs channel.ContainerStart, stdout, stderr io.Writer) (*Container, error) {
	if err := cs.Validate(); err != nil {
		return nil, fmt.Errorf("kvm: %w", err)
	}
	s.mu.Lock()
	switch {
	case !s.cfg.Pod:
		s.mu.Unlock()
		return nil, errors.New("kvm: not a pod sandbox")
	case !s.runningLocked():
		st := s.state
		s.mu.Unlock()
		return nil, fmt.Errorf("kvm: the pod is not running (the guest is %s)", st)
	case s.pod.containers[cs.Index] != nil:
		s.mu.Unlock()
		return nil, fmt.Errorf("kvm: container %d exists already", cs.Index)
	case cs.Index > 0 && !s.pod.isFilled(cs.Index):
		s.mu.Unlock()
		return nil, fmt.Errorf("kvm: pod slot %d is empty", cs.Index)
	}
	c := &Container{index: cs.Index, stdout: stdout, stderr: stderr, started: make(chan channel.ContainerStarted, 1), done: make(chan struct{}), code: -1,
		io: newContainerIO(&cs)}
	if s.pod.containers == nil {
		s.pod.containers = map[int]*Container{}
	}
	s.pod.containers[cs.Index] = c
	s.mu.Unlock()
	if err := s.write(channel.TypeContainerStart, cs, 5*time.Second); err != nil {
		return nil, err
	}
	select {
	case st := <-c.started:
		if st.Error != "" {
			return nil, &GuestError{Message: st.Error}
		}
		return c, nil
	case <-s.exited:
		return nil, s.endError("the pod ended before its container started")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Wait returns the container's exit code once it exited (its output is
// written by then), -1 and an error when the pod ended first.
func (c *Container) Wait(ctx context.Context, s *Sandbox) (int, error) {
	select {
	case <-c.done:
		return c.code, nil
	case <-s.exited:
		select {
		case <-c.done:
			return c.code, nil
		default:
		}
		return -1, s.endError("the pod ended while its container ran")
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// Done is closed when the container's process has exited.
func (c *Container) Done() <-chan struct{} { return c.done }

// KillContainer sends signal sig to container index's process group.
func (s *Sandbox) KillContainer(index, sig int) error {
	k := channel.ContainerKill{Index: index, Signal: sig}
	if err := k.Validate(); err != nil {
		return fmt.Errorf("kvm: %w", err)
	}
	s.mu.Lock()
	c := s.pod.containers[index]
	s.mu.Unlock()
	if c == nil {
		return fmt.Errorf("kvm: the pod has no container %d", index)
	}
	return s.write(channel.TypeContainerKill, k, 2*time.Second)
}

// ExecContainer runs a command in a pod's container (its root, user and
// environment), as Exec does beside a workload.
func (s *Sandbox) ExecContainer(ctx context.Context, index int, args []string, stdout, stderr io.Writer) (int, error) {
	return s.ExecContainerWith(ctx, index, args, ExecOptions{}, stdout, stderr)
}

// ExecContainerWith is ExecContainer with stdin and/or a terminal.
func (s *Sandbox) ExecContainerWith(ctx context.Context, index int, args []string, opts ExecOptions, stdout, stderr io.Writer) (int, error) {
	s.mu.Lock()
	c := s.pod.containers[index]
	s.mu.Unlock()
	if c == nil {
		return -1, fmt.Errorf("kvm: the pod has no container %d", index)
	}
	return s.exec(ctx, &index, args, opts, stdout, stderr)
}

// handleContainerFrame applies CONTAINER_STARTED, _OUT and _EXIT; a frame
// for a container the host did not start, or out of order, is a protocol
// violation. s.mu is held.
func (s *Sandbox) handleContainerFrame(t channel.Type, body []byte) error {
	if !s.cfg.Pod {
		return fmt.Errorf("%s from a sandbox that is not a pod", t)
	}
	if t == channel.TypeContainerOut {
		o, err := channel.DecodeContainerOutput(body)
		if err != nil {
			return err
		}
		c := s.pod.containers[o.Index]
		if c == nil || !c.seen || isClosed(c.done) {
			return fmt.Errorf("CONTAINER_OUT for container %d, which is not running", o.Index)
		}
		w := c.stdout
		if o.Stream == 2 {
			w = c.stderr
		}
		if w != nil {
			s.mu.Unlock()
			_, _ = w.Write(o.Data) // a failing writer loses output, not the pod
			s.mu.Lock()
		}
		return nil
	}
	if t == channel.TypeContainerStarted {
		var st channel.ContainerStarted
		if err := channel.Decode(t, body, &st); err != nil {
			return err
		}
		c := s.pod.containers[st.Index]
		if c == nil || c.seen || len(c.started) > 0 {
			return fmt.Errorf("CONTAINER_STARTED for container %d, which the host did not start", st.Index)
		}
		if len(st.Error) > 4096 {
			st.Error = st.Error[:4096] + "..."
		}
		st.Error = sanitize(st.Error)
		if st.Error != "" {
			delete(s.pod.containers, st.Index) // nothing of it runs
		} else {
			c.seen = true
		}
		c.started <- st
		return nil
	}
	if t == channel.TypeContainerRemoved {
		var r channel.ContainerRemoved
		if err := channel.Decode(t, body, &r); err != nil {
			return err
		}
		ch := s.pod.removing[r.Index]
		if ch == nil || len(ch) > 0 {
			// The answer to a removal its caller gave up waiting for:
			// the container stays in the host's books, and a removal
			// asked again is answered again.
			s.log.Warn("CONTAINER_REMOVED nobody waits for", "index", r.Index, "error", r.Error)
			return nil
		}
		if len(r.Error) > 4096 {
			r.Error = r.Error[:4096] + "..."
		}
		r.Error = sanitize(r.Error)
		ch <- r
		return nil
	}
	var e channel.ContainerExit
	if err := channel.Decode(t, body, &e); err != nil {
		return err
	}
	c := s.pod.containers[e.Index]
	if c == nil || !c.seen || isClosed(c.done) {
		return fmt.Errorf("CONTAINER_EXIT for container %d, which is not running", e.Index)
	}
	if e.Code < 0 || e.Code > 255 {
		return fmt.Errorf("container exit code %d out of range", e.Code)
	}
	c.code = e.Code
	close(c.done)
	return nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
