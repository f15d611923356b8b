package kvm

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A pod's image slots change disks while QEMU runs. Each slot is a
// read-only virtio-blk device whose raw node (podSlotNode) QEMU was given
// on its command line; a container's image is put in the slot by
// swapping the node's file child over QMP, with no help from the process
// that started QEMU:
//
//  1. the image disk (BuildImageDisk: a memfd of the slot's size, sealed
//     against every change before it was hashed) is checked to be so;
//  2. a read-only descriptor of it goes to QEMU with add-fd (its fd set
//     tagged podSlotTag(index)), and blockdev-add makes a file node on it
//     (podSlotFileNode: named after the fd set);
//  3. blockdev-reopen points the slot's raw node at that file node; from
//     the next read on, the guest reads the new image;
//  4. the slot's previous file node and fd set are deleted, so QEMU holds
//     no descriptor of the previous image and its memory is freed.
//
// Emptying a slot (RemoveContainer) swaps in a null-co node of the same
// size that reads zeros. Because nothing of this lives in the host
// process, a host service that took a pod over after a restart fills and
// empties slots as the one that started it did.
//
// The guest never sees a disk change under a mount: the host fills only a
// slot whose container the agent has forgotten (CONTAINER_REMOVED: no
// process in its root, its disk unmounted), and the agent drops its
// cached blocks and hashes the disk before it mounts it.

// podSlotNode is the node name of slot index's raw node (qemuArgs).
func podSlotNode(index int) string { return "ctr" + strconv.Itoa(index) + "-raw" }

// podSlotTag is the opaque tag of slot index's fd sets, and the prefix of
// its file nodes.
func podSlotTag(index int) string { return "ctr" + strconv.Itoa(index) + "-" }

// podSlotFileNode names the file node of slot index on fd set fdset.
func podSlotFileNode(index, fdset int) string {
	return podSlotTag(index) + "fd" + strconv.Itoa(fdset)
}

// podSlotDevice is the block device name (-drive id) of slot index.
func podSlotDevice(index int) string { return "ctr" + strconv.Itoa(index) }

// checkSealed makes sure f (an ImageDisk's file) can never change: a
// memfd of DiskSlotSize (the size every slot has, as the guest probed it)
// sealed against writes, growing, shrinking and further seals, so the
// digest taken when it was sealed is what QEMU reads.
func checkSealed(f *os.File) error {
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return fmt.Errorf("the image disk's seals: %w", err)
	}
	const all = unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL
	if seals&all != all {
		return fmt.Errorf("the image disk is not sealed against every change (seals %#x)", seals)
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != DiskSlotSize {
		return fmt.Errorf("the image disk is %d bytes, not the slot's %d", st.Size(), DiskSlotSize)
	}
	return nil
}

// swapSlot puts img (an ImageDisk's sealed memfd, checkSealed) in slot index, or
// empties the slot when img is nil. It fails only when the slot still
// holds what it held; what is left of the previous disk in QEMU but could
// not be deleted is logged.
func (s *Sandbox) swapSlot(ctx context.Context, index int, img *os.File) error {
	if s.qmp == nil {
		return fmt.Errorf("pod slot %d: no QMP connection", index)
	}
	node, fdset := "", -1 // the new node, and its fd set (an image's)
	if img == nil {
		node = podSlotTag(index) + "empty"
		// An earlier empty node of this slot (not in use: the slot holds
		// an image) is deleted first; the name is reused.
		_, _ = s.qmp.Execute(ctx, "blockdev-del", map[string]any{"node-name": node})
		if _, err := s.qmp.Execute(ctx, "blockdev-add", map[string]any{
			"driver": "null-co", "node-name": node, "size": DiskSlotSize, "read-zeroes": true, "read-only": true,
		}); err != nil {
			return fmt.Errorf("pod slot %d: an empty disk: %w", index, err)
		}
	} else {
		ro, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(img.Fd())), os.O_RDONLY, 0)
		if err != nil {
			return fmt.Errorf("pod slot %d: %w", index, err)
		}
		raw, err := s.qmp.ExecuteWithFile(ctx, "add-fd", map[string]any{"opaque": podSlotTag(index)}, ro)
		ro.Close() // QEMU has its own copy
		if err != nil {
			return fmt.Errorf("pod slot %d: passing the image to QEMU: %w", index, err)
		}
		var added struct {
			FDSet int `json:"fdset-id"`
		}
		if err := json.Unmarshal(raw, &added); err != nil {
			return fmt.Errorf("pod slot %d: add-fd: %w", index, err)
		}
		fdset, node = added.FDSet, podSlotFileNode(index, added.FDSet)
		if _, err := s.qmp.Execute(ctx, "blockdev-add", map[string]any{
			"driver": "file", "node-name": node, "filename": "/dev/fdset/" + strconv.Itoa(fdset),
			"read-only": true, "locking": "off",
		}); err != nil {
			s.removeFDSet(ctx, fdset)
			return fmt.Errorf("pod slot %d: a disk on the image: %w", index, err)
		}
	}
	if _, err := s.qmp.Execute(ctx, "blockdev-reopen", map[string]any{"options": []map[string]any{{
		"driver": "raw", "node-name": podSlotNode(index), "file": node, "read-only": true,
	}}}); err != nil {
		_, _ = s.qmp.Execute(ctx, "blockdev-del", map[string]any{"node-name": node})
		if fdset >= 0 {
			s.removeFDSet(ctx, fdset)
		}
		return fmt.Errorf("pod slot %d: switching the slot's disk: %w", index, err)
	}
	s.dropOldSlotNodes(ctx, index, node)
	return nil
}

// dropOldSlotNodes deletes slot index's file nodes and fd sets but keep's.
func (s *Sandbox) dropOldSlotNodes(ctx context.Context, index int, keep string) {
	tag := podSlotTag(index)
	raw, err := s.qmp.Execute(ctx, "query-named-block-nodes", map[string]any{"flat": true})
	if err != nil {
		s.log.Warn("pod slot: listing QEMU's block nodes", "slot", index, "err", err)
		return
	}
	var nodes []struct {
		Name string `json:"node-name"`
	}
	_ = json.Unmarshal(raw, &nodes)
	for _, n := range nodes {
		if strings.HasPrefix(n.Name, tag) && n.Name != keep && n.Name != podSlotNode(index) {
			if _, err := s.qmp.Execute(ctx, "blockdev-del", map[string]any{"node-name": n.Name}); err != nil {
				s.log.Warn("pod slot: deleting the previous disk's node", "slot", index, "node", n.Name, "err", err)
			}
		}
	}
	raw, err = s.qmp.Execute(ctx, "query-fdsets", nil)
	if err != nil {
		s.log.Warn("pod slot: listing QEMU's fd sets", "slot", index, "err", err)
		return
	}
	var sets []struct {
		ID  int `json:"fdset-id"`
		FDs []struct {
			Opaque string `json:"opaque"`
		} `json:"fds"`
	}
	_ = json.Unmarshal(raw, &sets)
	for _, set := range sets {
		if podSlotFileNode(index, set.ID) == keep {
			continue
		}
		for _, fd := range set.FDs {
			if fd.Opaque == tag {
				s.removeFDSet(ctx, set.ID)
				break
			}
		}
	}
}

// removeFDSet has QEMU close fd set id's descriptors (once no node uses
// them).
func (s *Sandbox) removeFDSet(ctx context.Context, id int) {
	if _, err := s.qmp.Execute(ctx, "remove-fd", map[string]any{"fdset-id": id}); err != nil {
		s.log.Warn("pod slot: removing an fd set", "fdset", id, "err", err)
	}
}

// countPodSlots is the number of image slots of the pod QEMU runs (its
// ctrN block devices), for a pod taken over (Reattach).
func (s *Sandbox) countPodSlots(ctx context.Context) (int, error) {
	raw, err := s.qmp.Execute(ctx, "query-block", nil)
	if err != nil {
		return 0, err
	}
	var devs []struct {
		Device string `json:"device"`
	}
	if err := json.Unmarshal(raw, &devs); err != nil {
		return 0, fmt.Errorf("query-block: %w", err)
	}
	n := 0
	for i := 1; i <= MaxPodSlots; i++ {
		for _, d := range devs {
			if d.Device == podSlotDevice(i) {
				n = i
			}
		}
	}
	return n, nil
}
