package launch

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

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
		{"tap with a named template", Options{Network: NetworkTap, NetNS: podNS(t), Template: "web"}, "a clone has no network device"},
		{"tap with ports", Options{Network: NetworkTap, NetNS: podNS(t), Ports: []string{"80"}}, "need --net user"},
		{"namespace without tap", Options{Network: NetworkUser, NetNS: "/run/netns/x"}, "for --net tap only"},
		{"tap", Options{Network: NetworkTap, NetNS: podNS(t)}, ""},
		{"volume without mode", Options{Volumes: []string{"/srv:/data"}}, "only read-only volumes"},
		{"volume with a named template", Options{Volumes: []string{"/srv:/data:ro"}, Template: "web"}, "no disk slot"},
		{"tmpfs with a named template", Options{Tmpfs: []string{"/scratch"}, Template: "web"}, ""},
		{"ports without network", Options{Ports: []string{"80"}}, "need --net user"},
		{"template with a network", Options{Network: NetworkUser, Template: "web"}, "a clone has no network device"},
		{"too many ports", Options{Network: NetworkUser, Ports: slices.Repeat([]string{"80"}, 33)}, "limit is 32"},
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
