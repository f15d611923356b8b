package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// Removing a container of a pod (CONTAINER_REMOVE): what lets the host
// reuse its image slot. Once the agent answers CONTAINER_REMOVED without
// an error, no process runs in the container's root and nothing in the
// guest has its slot's disk open: the host may put another image there,
// and the next CONTAINER_START at that index reads and checks it afresh
// (verifyDisk drops the cached blocks first).

// removeWait bounds how long the processes left in a removed container's
// root take to die after SIGKILL.
const removeWait = 5 * time.Second

// removeContainer forgets container index of the pod if it ended (or
// never started), and answers CONTAINER_REMOVED. Forgetting an index the
// pod does not know is not an error: the host may ask again after a
// restart.
func (s *session) removeContainer(index int) {
	err := s.pod.remove(index, s.forgetRoot)
	r := channel.ContainerRemoved{Index: index}
	if err != nil {
		r.Error = err.Error()
		s.log.Error("container not removed", "index", index, "err", err)
	} else {
		s.log.Info("container removed", "index", index)
	}
	if err := s.send(channel.TypeContainerRemoved, r); err != nil {
		s.log.Error("sending CONTAINER_REMOVED", "err", err)
	}
}

// forgetRoot drops what the session keeps of a container's root (the
// devpts mounted there for terminals).
func (s *session) forgetRoot(root string) {
	s.ptsMu.Lock()
	delete(s.ptmx, root)
	s.ptsMu.Unlock()
}

// remove ends what is left of an ended container index (processes in its
// root), unmounts its root and image disk (but container 0's, the pod's
// own image disk, which no other container can take) and forgets it.
func (p *pod) remove(index int, forget func(root string)) error {
	p.mu.Lock()
	c, ok := p.containers[index]
	if !ok {
		p.mu.Unlock()
		return nil
	}
	if !c.ended {
		p.mu.Unlock()
		if c.pid == 0 {
			return fmt.Errorf("container %d is starting", index)
		}
		return fmt.Errorf("container %d still runs: kill it first", index)
	}
	root := c.root
	p.mu.Unlock()
	if root == "" { // it failed before its root was known: whatever was mounted
		root = filepath.Join(podDir, strconv.Itoa(index), "rootfs")
		if index == 0 {
			root = channel.RootfsDir
		}
	}
	if err := killInRoot(root, removeWait); err != nil {
		return err
	}
	forget(root)
	if index > 0 {
		if err := unmountUnder(filepath.Join(podDir, strconv.Itoa(index))); err != nil {
			return err
		}
	}
	p.mu.Lock()
	delete(p.containers, index)
	p.mu.Unlock()
	return nil
}

// killInRoot sends SIGKILL to every process whose root is root (execs,
// and processes that left the container's process group) and waits up to
// wait for them to be gone.
func killInRoot(root string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		pids := processesInRoot(root)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v in the container's root did not end after SIGKILL", pids)
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond) // the reaper collects them
	}
}

// processesInRoot lists the live processes whose root directory is root
// (a zombie's root cannot be read: it is not listed).
func processesInRoot(root string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if r, err := os.Readlink("/proc/" + e.Name() + "/root"); err == nil && r == root {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmountUnder unmounts every mount at or under dir, the deepest first,
// without detaching lazily: a mount still in use is an error, not a disk
// the guest keeps reading after the host changed it.
func unmountUnder(dir string) error {
	for range 64 { // mounts stacked on one another come back in the next round
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return err
		}
		points := mountsUnder(string(b), dir)
		if len(points) == 0 {
			return nil
		}
		for _, m := range points {
			if err := unix.Unmount(m, 0); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("unmounting %s: %w", m, err)
			}
		}
	}
	return fmt.Errorf("mounts under %s keep coming back", dir)
}

// mountsUnder lists the mount points at or under dir in a mountinfo
// text, the deepest first.
func mountsUnder(mountinfo, dir string) []string {
	var out []string
	for line := range strings.SplitSeq(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		m := unescapeMountinfo(f[4])
		if m == dir || strings.HasPrefix(m, dir+"/") {
			out = append(out, m)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return slices.Compact(out)
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
