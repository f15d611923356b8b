package shim

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	cg1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cg2 "github.com/containerd/cgroups/v3/cgroup2/stats"
)

func TestParseProcCgroup(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		v1       map[string]string
		unified  string
	}{
		{"v1 with co-mounted controllers", "8:pids:/bulwark/a\n4:memory:/bulwark/a\n1:cpu,cpuacct:/bulwark/a\n0::/\n",
			map[string]string{"pids": "/bulwark/a", "memory": "/bulwark/a", "cpu": "/bulwark/a", "cpuacct": "/bulwark/a"}, "/"},
		{"v2 only", "0::/bulwark/b\n", map[string]string{}, "/bulwark/b"},
		{"named hierarchy and junk", "9:name=systemd:/\nnot a line\n", map[string]string{"name=systemd": "/"}, ""},
		{"a path with colons", "4:memory:/a:b\n", map[string]string{"memory": "/a:b"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v1, unified := parseProcCgroup([]byte(tc.in))
			if unified != tc.unified || len(v1) != len(tc.v1) {
				t.Fatalf("got %v %q, want %v %q", v1, unified, tc.v1, tc.unified)
			}
			for k, v := range tc.v1 {
				if v1[k] != v {
					t.Fatalf("%s: %q, want %q", k, v1[k], v)
				}
			}
		})
	}
}

// TestSandboxMetricsOfARealProcess reads this test process's own cgroup and
// /proc files on this machine, as the shim reads a sandbox's QEMU.
func TestSandboxMetricsOfARealProcess(t *testing.T) {
	x := 0
	for i := range 50_000_000 { // some CPU time to see
		x += i
	}
	_ = x
	m, err := defaultStatRoots.sandboxMetrics(uint32(os.Getpid()), "")
	if err != nil {
		t.Fatal(err)
	}
	switch m := m.(type) {
	case *cg1.Metrics:
		if m.CPU.GetUsage().GetTotal() == 0 || m.Memory.GetUsage().GetUsage() == 0 {
			t.Fatalf("v1: cpu %v memory %v: want both > 0", m.CPU, m.Memory.GetUsage())
		}
	case *cg2.Metrics:
		if m.CPU.GetUsageUsec() == 0 || m.Memory.GetUsage() == 0 {
			t.Fatalf("v2: cpu %v memory %v: want both > 0", m.CPU, m.Memory)
		}
	default:
		t.Fatalf("metrics of type %T", m)
	}
}

func TestSandboxMetricsRefusesAnotherProcess(t *testing.T) {
	// This process is not QEMU named bulwark-x: a pid reused after a
	// sandbox ended must not be reported as the sandbox.
	if _, err := defaultStatRoots.sandboxMetrics(uint32(os.Getpid()), "bulwark-x"); !errors.Is(err, errNotSandbox) {
		t.Fatalf("err = %v, want errNotSandbox", err)
	}
	if _, err := defaultStatRoots.sandboxMetrics(0, "bulwark-x"); err == nil {
		t.Fatal("pid 0 accepted")
	}
}

func TestReadProcCPU(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, stat string
		user, sys  uint64
		ok         bool
	}{
		{"a name with spaces and parentheses", "42 (qemu (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0\n", 2_500_000_000, 500_000_000, true},
		{"truncated", "42 (qemu) S 1 2\n", 0, 0, false},
		{"no name", "42 qemu S\n", 0, 0, false},
		{"not numbers", "42 (q) S 1 2 3 4 5 6 7 8 9 10 x y\n", 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "stat")
			if err := os.WriteFile(p, []byte(tc.stat), 0o644); err != nil {
				t.Fatal(err)
			}
			u, s, err := readProcCPU(p)
			if (err == nil) != tc.ok || u != tc.user || s != tc.sys {
				t.Fatalf("got %d %d %v", u, s, err)
			}
		})
	}
}

// TestReadV2 reads a directory shaped as a cgroup v2 group (this machine's
// cgroups are v1, so the real v2 files cannot be read here).
func TestReadV2(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"cpu.stat":       "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 3\n",
		"memory.stat":    "anon 4096\nfile 8192\ninactive_file 4096\npgfault 7\n",
		"memory.current": "12288\n",
		"memory.max":     "max\n",
		"pids.current":   "5\n",
		"pids.max":       "1024\n",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := readV2(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.CPU.UsageUsec != 1500 || m.CPU.UserUsec != 1000 || m.Memory.Usage != 12288 || m.Memory.UsageLimit != 0 ||
		m.Memory.InactiveFile != 4096 || m.Memory.Pgfault != 7 || m.Pids.Current != 5 || m.Pids.Limit != 1024 {
		t.Fatalf("metrics %v", m)
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.current"), []byte("lots\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readV2(dir); err == nil {
		t.Fatal("a malformed memory.current was accepted")
	}
}
