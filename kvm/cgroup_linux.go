package kvm

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultCgroupParent is where sandbox cgroups are created on a cgroup v2
// host. On a v1 (or hybrid) host they are /sys/fs/cgroup/CONTROLLER/bulwark/NAME
// for the cpu, memory and pids controllers.
const DefaultCgroupParent = "/sys/fs/cgroup/bulwark"

// cgroupRoot is where the cgroup file systems are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// sandboxPidsMax bounds QEMU's threads (vCPUs, I/O and TCG workers).
const sandboxPidsMax = 1024

// cgroup is one sandbox's cgroup: a v2 directory, or one directory per
// controller on a v1 hierarchy.
type cgroup struct {
	dir  string   // v2
	fd   *os.File // v2: the directory, for clone3(CLONE_INTO_CGROUP)
	v1   []string // v1: cpu, memory and pids directories
	once sync.Once
	err  error
}

// openCgroup creates the sandbox's cgroup as Config.CgroupParent says: ""
// picks v2 or v1 from what /sys/fs/cgroup is; a path is a v2 parent (tests
// point it at a plain directory); "none" means no cgroup (nil, nil). An
// error means the limits cannot be enforced: Start refuses to run.
func openCgroup(parent, name string, cpus, memMiB int, accel string) (*cgroup, error) {
	switch parent {
	case "none":
		return nil, nil
	case "":
	default:
		return newCgroup(parent, name, cpus, memMiB, accel, false)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(cgroupRoot, &st); err != nil {
		return nil, fmt.Errorf("cgroup: %s: %w", cgroupRoot, err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return newCgroup(DefaultCgroupParent, name, cpus, memMiB, accel, true)
	}
	return newCgroupV1(cgroupRoot, name, cpus, memMiB, accel)
}

// newCgroupV1 creates root/{cpu,memory,pids}/bulwark/name on a cgroup v1
// hierarchy (each controller its own mount, as on hybrid hosts) with the
// same limits as v2: CPU bandwidth, memory without swap, and a pids cap.
func newCgroupV1(root, name string, cpus, memMiB int, accel string) (*cgroup, error) {
	cpuMax, memMax := cgroupLimits(cpus, memMiB, accel)
	quota, period, _ := strings.Cut(cpuMax, " ")
	type setting struct {
		file, value string
		optional    bool // absent without swap accounting
	}
	ctrls := []struct {
		name string
		set  []setting
	}{
		{"cpu", []setting{{"cpu.cfs_period_us", period, false}, {"cpu.cfs_quota_us", quota, false}}},
		{"memory", []setting{{"memory.limit_in_bytes", memMax, false}, {"memory.memsw.limit_in_bytes", memMax, true}}},
		{"pids", []setting{{"pids.max", fmt.Sprint(sandboxPidsMax), false}}},
	}
	cg := &cgroup{}
	fail := func(err error) (*cgroup, error) {
		for _, d := range cg.v1 {
			unix.Rmdir(d)
		}
		return nil, err
	}
	for _, c := range ctrls {
		mount := filepath.Join(root, c.name)
		var st unix.Statfs_t
		if err := unix.Statfs(mount, &st); err != nil || st.Type != unix.CGROUP_SUPER_MAGIC {
			return fail(fmt.Errorf("cgroup: no cgroup v1 %s controller mounted at %s (and %s is not cgroup v2)", c.name, mount, root))
		}
		parent := filepath.Join(mount, "bulwark")
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fail(fmt.Errorf("cgroup: %w", err))
		}
		dir := filepath.Join(parent, name)
		if err := mkdirCgroup(dir); err != nil {
			return fail(err)
		}
		cg.v1 = append(cg.v1, dir)
		for _, s := range c.set {
			err := os.WriteFile(filepath.Join(dir, s.file), []byte(s.value), 0o644)
			if err != nil && !(s.optional && errors.Is(err, os.ErrNotExist)) {
				return fail(fmt.Errorf("cgroup: writing %s: %w", filepath.Join(dir, s.file), err))
			}
		}
	}
	return cg, nil
}

// start starts cmd inside the cgroup. On v2 the kernel places the child
// there as it is created (CLONE_INTO_CGROUP). On v1 there is no such flag,
// so the child is forked from a thread that has joined the cgroup first
// and leaves it right after: the child allocates nothing outside its limits.
// A nil cgroup just starts cmd.
func (c *cgroup) start(cmd *exec.Cmd) error {
	switch {
	case c == nil:
		return cmd.Start()
	case c.fd != nil:
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(c.fd.Fd())
		return cmd.Start()
	}
	errc := make(chan error, 1)
	go func() {
		// The fork happens on this thread: it must stay this thread
		// (Pdeathsig also follows the thread that forked).
		runtime.LockOSThread()
		home, err := threadCgroupsV1(c.v1)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		if err := joinV1(c.v1); err != nil {
			joinV1(home)
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = cmd.Start()
		if herr := joinV1(home); herr != nil {
			// The thread stays locked and this goroutine never returns,
			// so no other goroutine runs in the sandbox's cgroups and
			// the thread (Pdeathsig's parent) lives on.
			errc <- err
			select {}
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// threadCgroupsV1 returns, for each of dirs' controllers, the cgroup
// directory this thread is in now (from /proc/thread-self/cgroup).
func threadCgroupsV1(dirs []string) ([]string, error) {
	b, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	in := map[string]string{} // controller → path in its hierarchy
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, ctrl := range strings.Split(parts[1], ",") {
			in[ctrl] = parts[2]
		}
	}
	var home []string
	for _, d := range dirs {
		ctrl := filepath.Base(filepath.Dir(filepath.Dir(d))) // root/CTRL/bulwark/NAME
		p, ok := in[ctrl]
		if !ok {
			return nil, fmt.Errorf("cgroup: this thread is in no %s cgroup", ctrl)
		}
		home = append(home, filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(d))), ctrl, p))
	}
	return home, nil
}

// joinV1 moves the calling thread into each v1 cgroup directory.
func joinV1(dirs []string) error {
	tid := []byte(fmt.Sprint(unix.Gettid()))
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "tasks"), tid, 0o644); err != nil {
			return fmt.Errorf("cgroup: joining %s: %w", d, err)
		}
	}
	return nil
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

// newCgroup creates parent/name with cpu.max, memory.max and pids.max on a
// cgroup v2 hierarchy. checkFS makes sure parent's file system is cgroup v2
// (tests pass false to write into a plain directory). It fails when cgroups
// cannot be used.
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
	if err := mkdirCgroup(dir); err != nil {
		return nil, err
	}
	cpuMax, memMax := cgroupLimits(cpus, memMiB, accel)
	for file, v := range map[string]string{"cpu.max": cpuMax, "memory.max": memMax} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(v), 0o644); err != nil {
			os.Remove(dir)
			return nil, fmt.Errorf("cgroup: writing %s: %w", file, err)
		}
	}
	_ = os.WriteFile(filepath.Join(dir, "memory.swap.max"), []byte("0"), 0o644)                 // absent without swap accounting
	_ = os.WriteFile(filepath.Join(dir, "pids.max"), []byte(fmt.Sprint(sandboxPidsMax)), 0o644) // absent without the pids controller
	fd, err := os.Open(dir)
	if err != nil {
		os.Remove(dir)
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	return &cgroup{dir: dir, fd: fd}, nil
}

// remove deletes the cgroup once its processes are gone (briefly retrying:
// the kernel empties it just after the process is reaped).
// dirs are the cgroup's directories (one on v2, one per controller on v1).
func (c *cgroup) dirs() []string {
	if c.fd != nil {
		return []string{c.dir}
	}
	return c.v1
}

func (c *cgroup) remove() error {
	if c == nil {
		return nil
	}
	c.once.Do(func() {
		dirs := c.v1
		if c.fd != nil {
			c.fd.Close()
			dirs = []string{c.dir}
		}
		for _, d := range dirs {
			var err error
			for range 50 {
				err = unix.Rmdir(d)
				if err == nil || errors.Is(err, unix.ENOENT) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil && !errors.Is(err, unix.ENOENT) && c.err == nil {
				c.err = fmt.Errorf("cgroup: removing %s: %w", d, err)
			}
		}
	})
	return c.err
}

// mkdirCgroup makes a sandbox's cgroup directory. One left behind by a
// launcher that was killed (it could not remove it) is removed first when
// it is empty: rmdir of a cgroup fails while any process is in it, so a
// running sandbox's is never taken over.
func mkdirCgroup(dir string) error {
	err := os.Mkdir(dir, 0o755)
	if errors.Is(err, os.ErrExist) {
		if rerr := os.Remove(dir); rerr != nil {
			return fmt.Errorf("cgroup: %s exists and is in use (%v): is a sandbox of this name running?", dir, rerr)
		}
		err = os.Mkdir(dir, 0o755)
	}
	if err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	return nil
}

// SweepCgroups removes the sandbox cgroups that their launchers left
// behind (a launcher or daemon killed with SIGKILL cannot remove them; a
// persistent sandbox's QEMU killed while no daemon ran leaves its group
// too): every empty group under the sandbox parent (parent as
// Config.CgroupParent: "" for this host's default, "none" sweeps nothing)
// older than minAge. A group holding a process cannot be removed (rmdir of
// a non-empty cgroup fails), and one made in the last minAge is kept
// whatever it holds, so a launch between making its group and starting
// QEMU in it is never disturbed. It returns how many groups it removed.
func SweepCgroups(parent string, minAge time.Duration) (int, error) {
	var parents []string
	switch parent {
	case "none":
		return 0, nil
	case "":
		var st unix.Statfs_t
		if err := unix.Statfs(cgroupRoot, &st); err != nil {
			return 0, fmt.Errorf("cgroup: %s: %w", cgroupRoot, err)
		}
		if st.Type == unix.CGROUP2_SUPER_MAGIC {
			parents = []string{DefaultCgroupParent}
		} else {
			for _, c := range []string{"cpu", "memory", "pids"} {
				parents = append(parents, filepath.Join(cgroupRoot, c, "bulwark"))
			}
		}
	default:
		parents = []string{parent}
	}
	removed := 0
	var errs []error
	for _, p := range parents {
		entries, err := os.ReadDir(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cgroup: %w", err))
			continue
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			info, err := e.Info()
			if err != nil || time.Since(info.ModTime()) < minAge {
				continue
			}
			if unix.Rmdir(filepath.Join(p, e.Name())) == nil {
				removed++
			}
		}
	}
	return removed, errors.Join(errs...)
}
