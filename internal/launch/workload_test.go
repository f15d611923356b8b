package launch

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/measure"
	"golang.org/x/sys/unix"
)

// podNS is a network namespace of the test's own, as a path: a thread
// parked in it until the test ends (without root: a path that does not
// exist, which the cases needing a namespace then report).
func podNS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return "/run/netns/bulwark-test-needs-root"
	}
	path, done := make(chan string), make(chan struct{})
	var park func()
	park = func() {
		runtime.LockOSThread() // never unlocked: the thread, and so the namespace, ends with the goroutine
		if unix.Gettid() == unix.Getpid() {
			go park() // not the main thread: this goroutine holds it meanwhile
			<-done
			runtime.UnlockOSThread()
			return
		}
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			path <- "/run/netns/bulwark-test-no-namespace"
			<-done
			return
		}
		path <- fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		<-done
	}
	go park()
	t.Cleanup(func() { close(done) })
	return <-path
}

// TestValidateWorkload: the one check of the workload inputs every caller
// of Run gets: env keeps each key once (its last value, at its first
// place), ports are canonical, and each refusal names the flag.
func TestValidateWorkload(t *testing.T) {
	o := Options{Env: []string{"A=1", "B=2", "A=3=x"}, Network: NetworkUser, Ports: []string{"8080:80", "127.0.0.1:0:22/tcp", "443"}}
	if err := o.ValidateWorkload(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"A=3=x", "B=2"}; !slices.Equal(o.Env, want) {
		t.Errorf("env %q, want %q", o.Env, want)
	}
	if want := []string{"0.0.0.0:8080:80/tcp", "127.0.0.1:0:22/tcp", "0.0.0.0:0:443/tcp"}; !slices.Equal(o.Ports, want) {
		t.Errorf("ports %q, want %q", o.Ports, want)
	}
	v := Options{Volumes: []string{"/srv/../srv/www/:/data:ro"}, Tmpfs: []string{"/scratch:size=64m", "/cache"}}
	if err := v.ValidateWorkload(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(v.Volumes, []string{"/srv/www:/data:ro"}) || !slices.Equal(v.Tmpfs, []string{"/scratch:size=67108864", "/cache"}) {
		t.Errorf("volumes %q, tmpfs %q", v.Volumes, v.Tmpfs)
	}
	// Normalized values validate again to themselves (Run validates what 'launcher run' did).
	if err := v.ValidateWorkload(); err != nil || !slices.Equal(v.Tmpfs, []string{"/scratch:size=67108864", "/cache"}) {
		t.Errorf("again: %v, %q", err, v.Tmpfs)
	}
	sc := Options{Scratch: []string{"/data:size=2g", "/cache", "/tmp/x:size=16M"}}
	for range 2 { // normalized values validate again to themselves
		if err := sc.ValidateWorkload(); err != nil || !slices.Equal(sc.Scratch, []string{"/data:size=2147483648", "/cache:size=1073741824", "/tmp/x:size=16777216"}) {
			t.Errorf("scratch: %v, %q", err, sc.Scratch)
		}
	}
	// A terminal is not recorded: the event of a launch with one is the
	// event of the same launch without.
	tt := Options{Scratch: slices.Clone(sc.Scratch), TTY: &kvm.WindowSize{Rows: 24, Cols: 80}}
	if err := tt.ValidateWorkload(); err != nil {
		t.Fatal(err)
	}
	var ev, evTTY measure.LaunchEvent
	tt.workloadEvent(&evTTY, nil)
	var cfg kvm.Config
	tt.workloadConfig(&cfg, nil)
	if cfg.TTY == nil || *cfg.TTY != (kvm.WindowSize{Rows: 24, Cols: 80}) || cfg.TTY == tt.TTY {
		t.Errorf("sandbox terminal %+v, want a copy of 24x80", cfg.TTY)
	}
	sc.workloadEvent(&ev, nil)
	if !reflect.DeepEqual(ev, evTTY) {
		t.Errorf("the terminal changed the launch event: %+v vs %+v", evTTY, ev)
	}
	if want := []string{"scratch:/data:2147483648", "scratch:/cache:1073741824", "scratch:/tmp/x:16777216"}; !slices.Equal(ev.Volumes, want) {
		t.Errorf("event volumes %q, want %q", ev.Volumes, want)
	}
	if err := ev.CheckVolumes(); err != nil {
		t.Error(err)
	}
	z := Options{}
	if err := z.ValidateWorkload(); err != nil || z.Network != NetworkNone {
		t.Errorf("zero options: %v, network %q", err, z.Network)
	}
	many := make([]string, 129)
	for i := range many {
		many[i] = fmt.Sprintf("K%d=1", i)
	}
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"env without =", Options{Env: []string{"A"}}, `-e/--env "A": want KEY=VALUE`},
		{"too many env", Options{Env: many}, "-e/--env: more than 128 variables"},
		{"env too large", Options{Env: slices.Repeat([]string{"A=" + strings.Repeat("x", 8000)}, 1)}, ""},
		{"env total too large", Options{Env: func() []string {
			var e []string
			for i := range 9 {
				e = append(e, string(rune('A'+i))+"="+strings.Repeat("x", 8000))
			}
			return e
		}()}, "more than 65536 bytes"},
		{"tap without a namespace", Options{Network: NetworkTap}, "needs the pod's network namespace"},
		{"tap in a bad namespace path", Options{Network: NetworkTap, NetNS: "/tmp/ns"}, "netns: network namespace \"/tmp/ns\": want /proc/PID/ns/net"},
		{"tap in a missing namespace", Options{Network: NetworkTap, NetNS: "/run/netns/bulwark-none-such"}, "netns: network namespace: open"},
		{"tap in the host's namespace", Options{Network: NetworkTap, NetNS: fmt.Sprintf("/proc/%d/ns/net", os.Getpid())}, "is the host's"},
		{"tap with a named template", Options{Network: NetworkTap, NetNS: podNS(t), Template: "web"}, ""},
		{"tap with ports", Options{Network: NetworkTap, NetNS: podNS(t), Ports: []string{"80"}}, "need --net user"},
		{"namespace without tap", Options{Network: NetworkUser, NetNS: "/run/netns/x"}, "for --net tap only"},
		{"tap", Options{Network: NetworkTap, NetNS: podNS(t)}, ""},
		{"volume without mode", Options{Volumes: []string{"/srv:/data"}}, "only read-only volumes"},
		{"volume with a named template", Options{Volumes: []string{"/srv:/data:ro"}, Template: "web"}, "no disk slot"},
		{"tmpfs with a named template", Options{Tmpfs: []string{"/scratch"}, Template: "web"}, ""},
		{"scratch with a named template", Options{Scratch: []string{"/data"}, Template: "web"}, ""},
		{"scratch too small", Options{Scratch: []string{"/data:size=1m"}}, `--scratch "/data:size=1m": size 1048576: a scratch disk is 16m to 1024g`},
		{"scratch too large", Options{Scratch: []string{"/data:size=2t"}}, "16m to 1024g"},
		{"scratch not whole MiB", Options{Scratch: []string{"/data:size=17000k"}}, "whole number of MiB"},
		{"scratch bad size", Options{Scratch: []string{"/data:size=big"}}, `--scratch "/data:size=big": size "big"`},
		{"scratch bad option", Options{Scratch: []string{"/data:ro"}}, "want PATH or PATH:size=N"},
		{"scratch relative", Options{Scratch: []string{"data"}}, "--scratch: "},
		{"scratch with ..", Options{Scratch: []string{"/data/../etc"}}, "--scratch: "},
		{"scratch over /etc", Options{Scratch: []string{"/etc"}}, `--scratch: "/etc" is a system directory`},
		{"scratch over the secrets", Options{Scratch: []string{"/run/secrets"}}, "--scratch: "},
		{"scratch in /proc", Options{Scratch: []string{"/proc/x"}}, "--scratch: "},
		{"scratch over a tmpfs", Options{Tmpfs: []string{"/data"}, Scratch: []string{"/data"}}, "--scratch: /data mounted twice"},
		{"too many scratch", Options{Scratch: []string{"/a", "/b", "/c", "/d", "/e"}}, "--scratch: 5 scratch disks, the limit is 4"},
		{"ports without network", Options{Ports: []string{"80"}}, "need --net user"},
		{"template with a network", Options{Network: NetworkUser, Template: "web"}, ""},
		{"too many ports", Options{Network: NetworkUser, Ports: slices.Repeat([]string{"80"}, 33)}, "limit is 32"},
		{"terminal without rows", Options{TTY: &kvm.WindowSize{Cols: 80}}, "-t: channel: terminal size 0x80"},
		{"terminal too wide", Options{TTY: &kvm.WindowSize{Rows: 24, Cols: 10001}}, "-t: channel: terminal size 24x10001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.ValidateWorkload()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestScratchDisks: a one-shot launch's scratch disks are unlinked as
// soon as they are open (nothing is left on the host when the sandbox
// ends, however it ends); a persistent sandbox's stay in its run
// directory until it is removed.
func TestScratchDisks(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed: apt-get install e2fsprogs")
	}
	ctx := context.Background()
	state := t.TempDir()
	o := Options{StateDir: state, Scratch: []string{"/a:size=16m", "/b:size=32m"}}
	if err := o.ValidateWorkload(); err != nil {
		t.Fatal(err)
	}
	disks, err := o.scratchDisks(ctx, "sb1")
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range disks {
		st, err := d.File.Stat()
		if err != nil || st.Size() != d.Size || d.Size != int64(16<<20)*int64(i+1) || st.Sys().(*syscall.Stat_t).Nlink != 0 {
			t.Errorf("disk %d: %+v %v: want %d bytes, unlinked", i, d, err, d.Size)
		}
		d.File.Close()
	}
	if ents, err := os.ReadDir(filepath.Join(state, "scratch")); err != nil || len(ents) != 0 {
		t.Errorf("one-shot scratch directory: %v %v, want empty", ents, err)
	}
	run := t.TempDir()
	o.RunDir = run
	disks, err = o.scratchDisks(ctx, "sb1")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range disks {
		d.File.Close()
	}
	for _, n := range []string{"scratch0", "scratch1"} {
		if _, err := os.Stat(filepath.Join(run, n)); err != nil {
			t.Errorf("run directory: %v", err)
		}
	}
	// An existing file is not overwritten: the launch fails, and the
	// disks made before are closed.
	if _, err := o.scratchDisks(ctx, "sb1"); err == nil || !strings.Contains(err.Error(), "scratch disk for /a") {
		t.Errorf("again in the same run directory: %v", err)
	}
}
