package kvm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultCgroupParent is where sandbox cgroups are created (cgroup v2).
const DefaultCgroupParent = "/sys/fs/cgroup/bulwark"

// cgroup is one sandbox's cgroup v2 directory.
type cgroup struct {
	dir  string
	fd   *os.File // the directory, for clone3(CLONE_INTO_CGROUP)
	once sync.Once
	err  error
}

// cgroupLimits computes cpu.max and memory.max for a sandbox: CPUs whole
// CPUs of bandwidth, the guest's memory plus QEMU's own overhead (larger
// under TCG, whose translation cache lives in QEMU).
func cgroupLimits(cpus, memMiB int, accel string) (cpuMax, memMax string) {
	overhead := 256
	if accel == AccelTCG {
		overhead = 768
	}
	return fmt.Sprintf("%d 100000", cpus*100000), fmt.Sprintf("%d", int64(memMiB+overhead)<<20)
}

// newCgroup creates parent/name with cpu.max and memory.max. checkFS makes
// sure parent's file system is cgroup v2 (tests pass false to write into a
// plain directory). It fails when cgroups cannot be used; the caller warns
// and runs without.
func newCgroup(parent, name string, cpus, memMiB int, accel string, checkFS bool) (*cgroup, error) {
	root := filepath.Dir(parent)
	if checkFS {
		var st unix.Statfs_t
		if err := unix.Statfs(root, &st); err != nil {
			return nil, fmt.Errorf("cgroup: %s: %w", root, err)
		}
		if st.Type != unix.CGROUP2_SUPER_MAGIC {
			return nil, fmt.Errorf("cgroup: %s is not a cgroup v2 mount (hybrid or v1 hierarchy)", root)
		}
	}
	ctrls, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	for _, c := range []string{"cpu", "memory"} {
		if !strings.Contains(" "+strings.TrimSpace(string(ctrls))+" ", " "+c+" ") {
			return nil, fmt.Errorf("cgroup: controller %q is not available in %s", c, root)
		}
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	for _, d := range []string{root, parent} {
		if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte("+cpu +memory"), 0o644); err != nil {
			return nil, fmt.Errorf("cgroup: enabling cpu and memory controllers in %s: %w", d, err)
		}
	}
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	cpuMax, memMax := cgroupLimits(cpus, memMiB, accel)
	for file, v := range map[string]string{"cpu.max": cpuMax, "memory.max": memMax} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(v), 0o644); err != nil {
			os.Remove(dir)
			return nil, fmt.Errorf("cgroup: writing %s: %w", file, err)
		}
	}
	_ = os.WriteFile(filepath.Join(dir, "memory.swap.max"), []byte("0"), 0o644) // absent without swap accounting
	fd, err := os.Open(dir)
	if err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	return &cgroup{dir: dir, fd: fd}, nil
}

// remove deletes the cgroup once its processes are gone (briefly retrying:
// the kernel empties it just after the process is reaped).
func (c *cgroup) remove() error {
	if c == nil {
		return nil
	}
	c.once.Do(func() {
		c.fd.Close()
		var err error
		for range 50 {
			err = unix.Rmdir(c.dir)
			if err == nil || errors.Is(err, unix.ENOENT) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		c.err = fmt.Errorf("cgroup: removing %s: %w", c.dir, err)
	})
	return c.err
}
