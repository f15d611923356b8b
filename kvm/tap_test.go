package kvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNetNS is a network namespace the test made: a thread of this process
// parked in it, so the namespace lives exactly as long as the test wants
// (and no longer than the process). Path is the thread's
// /proc/PID/task/TID/ns/net.
type testNetNS struct {
	Path string
	fd   *os.File
	run  chan func()
	done chan struct{}
}

// newTestNetNS makes a network namespace (unshare on a locked thread that
// never leaves it); t's cleanup ends the thread and closes the descriptor,
// so the namespace goes once nothing else holds it.
func newTestNetNS(t *testing.T) *testNetNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("making network namespaces needs root")
	}
	n := &testNetNS{run: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	goLockedOffMain(func() {
		defer close(n.done)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- err
			return
		}
		n.Path = fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		f, err := os.Open(n.Path)
		if err != nil {
			ready <- err
			return
		}
		n.fd = f
		ready <- nil
		for fn := range n.run {
			fn()
		}
	})
	if err := <-ready; err != nil {
		t.Fatalf("making a network namespace: %v", err)
	}
	t.Cleanup(func() {
		close(n.run)
		<-n.done
		n.fd.Close()
	})
	return n
}

// do runs f in the namespace (on its thread).
func (n *testNetNS) do(f func()) {
	ran := make(chan struct{})
	n.run <- func() { f(); close(ran) }
	<-ran
}

// handle is a netlink handle in the namespace.
func (n *testNetNS) handle(t *testing.T) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(netns.NsHandle(n.fd.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// TestCheckNetNS: only an existing network namespace other than the
// host's, named by one of the accepted path forms, is taken.
func TestCheckNetNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, /run/netns)")
	}
	pod := newTestNetNS(t)
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		t.Fatal(err)
	}
	notNS := filepath.Join("/run/netns", fmt.Sprintf("bulwark-test-file-%d", os.Getpid()))
	if err := os.WriteFile(notNS, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(notNS) })
	for _, tc := range []struct {
		name, path, want string
	}{
		{"a thread's namespace", pod.Path, ""},
		{"empty", "", "missing"},
		{"relative", "proc/1/ns/net", "want /proc/PID/ns/net"},
		{"not clean", "/run/netns/../netns/x", "want /proc/PID/ns/net"},
		{"elsewhere", "/tmp/netns", "want /proc/PID/ns/net"},
		{"self", "/proc/self/ns/net", "want /proc/PID/ns/net"},
		{"another namespace type", "/proc/1/ns/mnt", "want /proc/PID/ns/net"},
		{"a name with a slash", "/run/netns/a/b", "want /proc/PID/ns/net"},
		{"missing", "/run/netns/bulwark-test-none-such", "no such file"},
		{"not a namespace", notNS, "not a network namespace"},
		{"the host's (init's, where it can be opened)", "/proc/1/ns/net", ""},
		{"the host's (ours)", fmt.Sprintf("/proc/%d/ns/net", os.Getpid()), "is the host's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckNetNS(tc.path)
			if tc.path == "/proc/1/ns/net" {
				// Without CAP_SYS_PTRACE (in a container) init's
				// namespace cannot be opened at all.
				if err == nil || !strings.Contains(err.Error(), "is the host's") && !errors.Is(err, os.ErrPermission) {
					t.Fatalf("CheckNetNS(%q) = %v, want it refused", tc.path, err)
				}
				return
			}
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckNetNS(%q) = %v, want an error containing %q", tc.path, err, tc.want)
			}
		})
	}
}

// podNetwork is a pod's network as a CNI bridge plugin would leave it,
// made of two namespaces of the test's own: the pod's, whose eth0 is one
// end of a veth pair with address 10.199.0.2/24 and a default route via
// 10.199.0.1, and a peer namespace (the "host" side) holding the other
// end with 10.199.0.1/24. Traffic stays between them.
type podNetwork struct {
	pod, peer *testNetNS
	mac       string
}

func newPodNetwork(t *testing.T) *podNetwork {
	t.Helper()
	p := &podNetwork{pod: newTestNetNS(t), peer: newTestNetNS(t)}
	ph := p.pod.handle(t)
	peer := p.peer.handle(t)
	if err := ph.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "veth-peer",
		PeerNamespace: netlink.NsFd(int(p.peer.fd.Fd()))}); err != nil {
		t.Fatalf("veth: %v", err)
	}
	for _, s := range []struct {
		h    *netlink.Handle
		name string
		addr string
	}{{ph, "eth0", "10.199.0.2/24"}, {peer, "veth-peer", "10.199.0.1/24"}} {
		l, err := s.h.LinkByName(s.name)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := netlink.ParseAddr(s.addr)
		if err := s.h.AddrAdd(l, a); err != nil {
			t.Fatal(err)
		}
		if err := s.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		if s.name == "eth0" {
			p.mac = l.Attrs().HardwareAddr.String()
			if err := s.h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("10.199.0.1")}); err != nil {
				t.Fatalf("default route: %v", err)
			}
		}
	}
	return p
}

// listenIn listens on addr inside namespace n.
func listenIn(t *testing.T, n *testNetNS, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	var err error
	n.do(func() { l, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// clientIn is an HTTP client whose connections are made inside n.
func clientIn(n *testNetNS) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			var err error
			n.do(func() { c, err = (&net.Dialer{Timeout: 20 * time.Second}).DialContext(ctx, network, addr) })
			return c, err
		},
	}}
}

// TestSandboxTapNetwork boots a sandbox joined to a pod's network
// namespace through a tap: the guest has the pod interface's MAC and
// address, a web server in it answers at the pod's address from the peer
// namespace, and the guest reaches a server in the peer namespace through
// its default route. QEMU stays in a network namespace of its own (it
// only holds the tap), and the tap is gone with QEMU.
func TestSandboxTapNetwork(t *testing.T) {
	e := bootEnv(t)
	pn := newPodNetwork(t)
	hello := listenIn(t, pn.peer, "10.199.0.1:0")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello-from-the-peer\n")
	})}
	go srv.Serve(hello)
	t.Cleanup(func() { srv.Close() })
	script := strings.Join([]string{
		"cat /sys/class/net/eth0/address",
		"/bin/busybox wget -q -O - http://" + hello.Addr().String() + "/ || echo wget-failed",
		"/bin/busybox mkdir -p /tmp/www && echo hello-from-the-pod > /tmp/www/index.html",
		"/bin/busybox httpd -p 8080 -h /tmp/www && echo serving",
		"while :; do sleep 1; done",
	}, "\n")
	img := testImage(t, v1.Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{script}, Env: []string{"PATH=/bin"}})
	ctx := context.Background()
	sb, stdout, stderr, console := startSandbox(t, ctx, e, img, func(c *Config) {
		c.Network, c.NetNS = NetworkTap, pn.pod.Path
	})
	// QEMU has the tap; the pod's namespace has it too, redirected.
	ph := pn.pod.handle(t)
	if _, err := ph.LinkByName(tapName); err != nil {
		t.Fatalf("the tap in the pod's namespace: %v", err)
	}
	if fs, err := ph.FilterList(mustLink(t, ph, "eth0"), netlink.MakeHandle(0xffff, 0)); err != nil || len(fs) != 1 {
		t.Fatalf("eth0's ingress filters: %v %v, want one redirect", fs, err)
	}
	qemuNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", sb.PID()))
	hostNS, _ := os.Readlink("/proc/self/ns/net")
	podNS, _ := os.Readlink(pn.pod.Path)
	if err != nil || qemuNS == hostNS || qemuNS == podNS {
		t.Errorf("QEMU's network namespace %s (%v): want one of its own, not the host's %s nor the pod's %s", qemuNS, err, hostNS, podNS)
	}
	if err := sb.StartWorkload(ctx, nil, nil); err != nil {
		t.Fatalf("StartWorkload: %v\nconsole:\n%s", err, console.String())
	}
	waitForOutput(t, stdout, "serving")
	out := stdout.String()
	for _, want := range []string{pn.mac + "\n", "hello-from-the-peer\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s\nstderr:\n%s\nconsole:\n%s", want, out, stderr.String(), console.String())
		}
	}
	resp, err := clientIn(pn.peer).Get("http://10.199.0.2:8080/")
	if err != nil {
		t.Fatalf("GET the pod's address from the peer namespace: %v\nconsole:\n%s", err, console.String())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello-from-the-pod\n" {
		t.Errorf("GET: %s %q", resp.Status, body)
	}
	pid := sb.PID()
	if err := sb.Stop(time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	sb.Close()
	if !processGone(pid) {
		t.Errorf("QEMU (pid %d) outlived its sandbox", pid)
	}
	if _, err := ph.LinkByName(tapName); !errors.As(err, new(netlink.LinkNotFoundError)) {
		t.Errorf("the tap after the sandbox ended: %v, want it gone", err)
	}
}

// TestSandboxTapRefusals: a tap sandbox whose namespace has no usable pod
// interface, or already has a running sandbox's tap, does not start, and
// says why.
func TestSandboxTapRefusals(t *testing.T) {
	e := bootEnv(t)
	img := testImage(t, v1.Config{Entrypoint: []string{"/bin/true"}})
	ctx := context.Background()
	empty := newTestNetNS(t)
	start := func(ns string) error {
		disk := buildDisk(t, img)
		sb, err := Start(ctx, Config{KernelPath: e.vmlinux, InitrdPath: e.basePath, Image: disk.File, MemoryMiB: 256,
			BootTimeout: 90 * time.Second, Network: NetworkTap, NetNS: ns, Logger: testLogger(t)})
		if err == nil {
			sb.Close()
		}
		return err
	}
	if err := start(empty.Path); err == nil || !strings.Contains(err.Error(), "no interface but lo") {
		t.Errorf("a namespace without a pod interface: %v", err)
	}
	noAddr := newTestNetNS(t)
	h := noAddr.handle(t)
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth1"}); err != nil {
		t.Fatal(err)
	}
	if err := start(noAddr.Path); err == nil || !strings.Contains(err.Error(), "eth0 has no IPv4 address") {
		t.Errorf("a pod interface without an address: %v", err)
	}
	pn := newPodNetwork(t)
	sb, _, _, console := startSandbox(t, ctx, e, img, func(c *Config) { c.Network, c.NetNS = NetworkTap, pn.pod.Path })
	if err := start(pn.pod.Path); err == nil || !strings.Contains(err.Error(), "another sandbox's tap") {
		t.Errorf("a second sandbox in the namespace: %v\nconsole:\n%s", err, console.String())
	}
	sb.Close()
}

func mustLink(t *testing.T, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
