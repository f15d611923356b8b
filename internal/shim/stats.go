package shim

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	cg1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cg2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/protobuf"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// A container's resource usage is its sandbox's: the QEMU process that is
// the VM (its vCPUs, its device threads and the guest's memory). The host
// service puts that process in a cgroup of its own (kvm's jailer: cpu,
// memory and pids on a v1 host, one directory on v2), so the shim reports
// that cgroup in the form containerd's CRI reads from runc's shim:
// io.containerd.cgroups.v1.Metrics or io.containerd.cgroups.v2.Metrics.

// maxStatFile bounds what is read of one cgroup or /proc file.
const maxStatFile = 64 << 10

// statRoots are where the process and cgroup file systems are (tests keep
// the defaults; they name the real files of this machine).
type statRoots struct {
	proc   string // "/proc"
	cgroup string // "/sys/fs/cgroup"
}

var defaultStatRoots = statRoots{proc: "/proc", cgroup: "/sys/fs/cgroup"}

// errNotSandbox says pid is no longer the sandbox's QEMU.
var errNotSandbox = errors.New("the sandbox's QEMU is gone")

// sandboxMetrics returns the resource usage of the sandbox whose QEMU is
// pid. qemuName is QEMU's -name (bulwark-ID): a pid reused by another
// process after QEMU exited is refused instead of reported.
func (r statRoots) sandboxMetrics(pid uint32, qemuName string) (proto.Message, error) {
	if pid == 0 {
		return nil, errors.New("the sandbox has not started")
	}
	dir := filepath.Join(r.proc, strconv.FormatUint(uint64(pid), 10))
	if qemuName != "" {
		cmd, err := readLimited(filepath.Join(dir, "cmdline"))
		if err != nil || !bytes.Contains(cmd, []byte("\x00"+qemuName+"\x00")) {
			return nil, errNotSandbox
		}
	}
	raw, err := readLimited(filepath.Join(dir, "cgroup"))
	if err != nil {
		return nil, err
	}
	paths, unified := parseProcCgroup(raw)
	var st unix.Statfs_t
	if err := unix.Statfs(r.cgroup, &st); err != nil {
		return nil, fmt.Errorf("stats: %s: %w", r.cgroup, err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		if unified == "" {
			return nil, fmt.Errorf("stats: process %d has no cgroup v2 path", pid)
		}
		return readV2(filepath.Join(r.cgroup, unified))
	}
	return r.readV1(dir, paths)
}

// zeroMetrics is the usage of what does not run: zero, in the form of this
// host's cgroup version.
func (r statRoots) zeroMetrics() (proto.Message, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(r.cgroup, &st); err != nil {
		return nil, fmt.Errorf("stats: %s: %w", r.cgroup, err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return &cg2.Metrics{CPU: &cg2.CPUStat{}, Memory: &cg2.MemoryStat{}, Pids: &cg2.PidsStat{}}, nil
	}
	return &cg1.Metrics{CPU: &cg1.CPUStat{Usage: &cg1.CPUUsage{}}, Memory: &cg1.MemoryStat{Usage: &cg1.MemoryEntry{}}, Pids: &cg1.PidsStat{}}, nil
}

// parseProcCgroup reads /proc/PID/cgroup: "ID:controller[,controller]:path"
// lines. It returns each v1 controller's path and the v2 path ("0::").
func parseProcCgroup(raw []byte) (v1 map[string]string, unified string) {
	v1 = map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			unified = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			v1[c] = parts[2]
		}
	}
	return v1, unified
}

// readV1 reads the v1 controllers the jailer uses. CPU time comes from
// cpuacct when the process has a cpuacct group of its own, else from the
// process itself (QEMU is the whole sandbox).
func (r statRoots) readV1(procDir string, paths map[string]string) (*cg1.Metrics, error) {
	m := &cg1.Metrics{}
	if p, ok := paths["memory"]; ok && p != "/" {
		dir := filepath.Join(r.cgroup, "memory", p)
		kv, err := readKeyValues(filepath.Join(dir, "memory.stat"))
		if err != nil {
			return nil, err
		}
		mem := &cg1.MemoryStat{
			Cache: kv["cache"], RSS: kv["rss"], RSSHuge: kv["rss_huge"], MappedFile: kv["mapped_file"],
			Dirty: kv["dirty"], Writeback: kv["writeback"], PgPgIn: kv["pgpgin"], PgPgOut: kv["pgpgout"],
			PgFault: kv["pgfault"], PgMajFault: kv["pgmajfault"], InactiveAnon: kv["inactive_anon"],
			ActiveAnon: kv["active_anon"], InactiveFile: kv["inactive_file"], ActiveFile: kv["active_file"],
			Unevictable: kv["unevictable"], HierarchicalMemoryLimit: kv["hierarchical_memory_limit"],
			HierarchicalSwapLimit: kv["hierarchical_memsw_limit"], TotalCache: kv["total_cache"],
			TotalRSS: kv["total_rss"], TotalRSSHuge: kv["total_rss_huge"], TotalMappedFile: kv["total_mapped_file"],
			TotalDirty: kv["total_dirty"], TotalWriteback: kv["total_writeback"], TotalPgPgIn: kv["total_pgpgin"],
			TotalPgPgOut: kv["total_pgpgout"], TotalPgFault: kv["total_pgfault"], TotalPgMajFault: kv["total_pgmajfault"],
			TotalInactiveAnon: kv["total_inactive_anon"], TotalActiveAnon: kv["total_active_anon"],
			TotalInactiveFile: kv["total_inactive_file"], TotalActiveFile: kv["total_active_file"],
			TotalUnevictable: kv["total_unevictable"],
		}
		usage := &cg1.MemoryEntry{}
		if usage.Usage, err = readUint(filepath.Join(dir, "memory.usage_in_bytes")); err != nil {
			return nil, err
		}
		if usage.Limit, err = readUint(filepath.Join(dir, "memory.limit_in_bytes")); err != nil {
			return nil, err
		}
		usage.Max, _ = readUint(filepath.Join(dir, "memory.max_usage_in_bytes"))
		usage.Failcnt, _ = readUint(filepath.Join(dir, "memory.failcnt"))
		mem.Usage = usage
		m.Memory = mem
	} else {
		// No memory cgroup of its own (a sandbox launched without
		// cgroups): the process's resident memory is the best there is.
		rss, err := readStatusKB(filepath.Join(procDir, "status"), "VmRSS")
		if err != nil {
			return nil, err
		}
		m.Memory = &cg1.MemoryStat{RSS: rss, TotalRSS: rss, Usage: &cg1.MemoryEntry{Usage: rss}}
	}
	if p, ok := paths["pids"]; ok && p != "/" {
		dir := filepath.Join(r.cgroup, "pids", p)
		cur, err := readUint(filepath.Join(dir, "pids.current"))
		if err != nil {
			return nil, err
		}
		limit, _ := readUint(filepath.Join(dir, "pids.max")) // "max": no limit, 0
		m.Pids = &cg1.PidsStat{Current: cur, Limit: limit}
	}
	if p, ok := paths["cpuacct"]; ok && p != "/" {
		total, err := readUint(filepath.Join(r.cgroup, "cpuacct", p, "cpuacct.usage"))
		if err != nil {
			return nil, err
		}
		m.CPU = &cg1.CPUStat{Usage: &cg1.CPUUsage{Total: total}}
	} else {
		user, sys, err := readProcCPU(filepath.Join(procDir, "stat"))
		if err != nil {
			return nil, err
		}
		m.CPU = &cg1.CPUStat{Usage: &cg1.CPUUsage{Total: user + sys, User: user, Kernel: sys}}
	}
	if p, ok := paths["cpu"]; ok && p != "/" {
		kv, err := readKeyValues(filepath.Join(r.cgroup, "cpu", p, "cpu.stat"))
		if err == nil {
			m.CPU.Throttling = &cg1.Throttle{Periods: kv["nr_periods"], ThrottledPeriods: kv["nr_throttled"], ThrottledTime: kv["throttled_time"]}
		}
	}
	return m, nil
}

// readV2 reads a cgroup v2 directory.
func readV2(dir string) (*cg2.Metrics, error) {
	cpu, err := readKeyValues(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return nil, err
	}
	mem, err := readKeyValues(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return nil, err
	}
	usage, err := readUint(filepath.Join(dir, "memory.current"))
	if err != nil {
		return nil, err
	}
	limit, _ := readUint(filepath.Join(dir, "memory.max")) // "max": no limit, 0
	m := &cg2.Metrics{
		CPU: &cg2.CPUStat{
			UsageUsec: cpu["usage_usec"], UserUsec: cpu["user_usec"], SystemUsec: cpu["system_usec"],
			NrPeriods: cpu["nr_periods"], NrThrottled: cpu["nr_throttled"], ThrottledUsec: cpu["throttled_usec"],
		},
		Memory: &cg2.MemoryStat{
			Anon: mem["anon"], File: mem["file"], KernelStack: mem["kernel_stack"], Slab: mem["slab"],
			Sock: mem["sock"], Shmem: mem["shmem"], FileMapped: mem["file_mapped"], FileDirty: mem["file_dirty"],
			FileWriteback: mem["file_writeback"], AnonThp: mem["anon_thp"], InactiveAnon: mem["inactive_anon"],
			ActiveAnon: mem["active_anon"], InactiveFile: mem["inactive_file"], ActiveFile: mem["active_file"],
			Unevictable: mem["unevictable"], Pgfault: mem["pgfault"], Pgmajfault: mem["pgmajfault"],
			Usage: usage, UsageLimit: limit,
		},
	}
	if cur, err := readUint(filepath.Join(dir, "pids.current")); err == nil {
		limit, _ := readUint(filepath.Join(dir, "pids.max"))
		m.Pids = &cg2.PidsStat{Current: cur, Limit: limit}
	}
	return m, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	defer f.Close()
	b := make([]byte, maxStatFile)
	n, err := f.Read(b)
	if err != nil && n == 0 {
		return nil, fmt.Errorf("stats: %s: %w", path, err)
	}
	return b[:n], nil
}

// readUint reads a file holding one number ("max" reads as 0: no limit).
func readUint(path string) (uint64, error) {
	b, err := readLimited(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stats: %s: %q is not a number", path, s)
	}
	return v, nil
}

// readKeyValues reads "key value" lines (memory.stat, cpu.stat); lines of
// another shape are skipped.
func readKeyValues(path string) (map[string]uint64, error) {
	b, err := readLimited(path)
	if err != nil {
		return nil, err
	}
	kv := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			kv[k] = n
		}
	}
	return kv, nil
}

// readStatusKB reads a "Name:   N kB" line of /proc/PID/status, in bytes.
func readStatusKB(path, name string) (uint64, error) {
	b, err := readLimited(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				if n, err := strconv.ParseUint(f[0], 10, 64); err == nil {
					return n << 10, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("stats: %s: no %s line", path, name)
}

// clockTick is the unit of /proc/PID/stat's times: USER_HZ, 100 on every
// Linux ABI Bulwark runs on.
const clockTick = 100

// readProcCPU returns a process's user and system CPU time (all its
// threads) in nanoseconds, from /proc/PID/stat fields 14 and 15.
func readProcCPU(path string) (user, sys uint64, err error) {
	b, err := readLimited(path)
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("stats: %s: malformed", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state is field 3, so utime (14) and stime (15) are
	// f[11] and f[12].
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("stats: %s: malformed", path)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("stats: %s: malformed", path)
	}
	const ns = 1_000_000_000 / clockTick
	return u * ns, s * ns, nil
}

// Stats reports the container's sandbox: its QEMU's cgroup (CPU, memory,
// pids), as runc's shim reports a container's cgroup (stats.go). What
// does not run on the host (yet) reports zero.
func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	s.mu.Lock()
	c, err := s.container(r.ID)
	var pid uint32
	var sandbox string
	var pause bool
	if err == nil {
		pid, sandbox, pause = c.task.pid, c.sandbox, c.pause
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	var m proto.Message
	if pause || sandbox == "" || pid == 0 {
		// Nothing of it runs on the host (a pod's sandbox container, or a
		// container not started yet): zero, not an error containerd's
		// CRI would log every second.
		m, err = defaultStatRoots.zeroMetrics()
	} else {
		m, err = defaultStatRoots.sandboxMetrics(pid, "bulwark-"+sandbox)
	}
	if errors.Is(err, errNotSandbox) {
		return nil, errdefs.ToGRPCf(errdefs.ErrNotFound, "container %s: %v", r.ID, err)
	}
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrUnknown, "container %s: reading its sandbox's usage: %v", r.ID, err)
	}
	a, err := protobuf.MarshalAnyToProto(m)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: a}, nil
}
