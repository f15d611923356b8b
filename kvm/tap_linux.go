package kvm

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// A tap sandbox (Config.Network = NetworkTap) joins a pod's network
// namespace the way Kata Containers does by default ("tcfilter"): the
// launcher creates a tap device inside the pod's namespace and redirects,
// with tc's mirred action on the ingress of each, every frame arriving
// on the pod's interface (the CNI's veth, eth0) out of the tap, and every
// frame the guest sends out of the pod's interface. The guest's virtio-net
// device has the pod interface's MAC, and the agent gives it the
// interface's IPv4 address and default route: from outside, the guest is
// the pod. Chosen over macvtap because it works with any interface a CNI
// makes, needs no device node in the host's /dev (macvtap's /dev/tapN
// names clash across namespaces), and leaves the pod interface, its
// address and the CNI's view of them as they were (a CNI DEL still finds
// what its ADD made).
//
// QEMU does not open /dev/net/tun: it receives the tap as a descriptor
// and keeps a network namespace of its own, empty. The tap is not
// persistent: it goes away with the last descriptor, QEMU's.

// tapName is the tap's name inside the pod's namespace.
const tapName = "tap0_bulwark"

// nsGetNSType is NS_GET_NSTYPE (linux/nsfs.h): _IO(0xb7, 0x3).
const nsGetNSType = 0xb703

// netNSPath is the form of the network namespace paths CheckNetNS accepts:
// a process's or thread's (/proc/PID/ns/net, /proc/PID/task/TID/ns/net) or
// one named by ip netns or a CRI runtime (/run/netns/NAME,
// /var/run/netns/NAME).
var netNSPath = regexp.MustCompile(`^(/proc/[1-9][0-9]{0,9}(/task/[1-9][0-9]{0,9})?/ns/net|(/var)?/run/netns/[A-Za-z0-9][A-Za-z0-9._-]{0,127})$`)

// CheckNetNS checks that p names an existing network namespace other than
// the host's (the caller's and init's): a tap sandbox redirects all of the
// namespace's traffic into its guest. The path must be a
// /proc/PID/ns/net, /proc/PID/task/TID/ns/net, /run/netns/NAME or
// /var/run/netns/NAME path.
func CheckNetNS(p string) error {
	f, err := openNetNS(p)
	if err != nil {
		return err
	}
	return f.Close()
}

// openNetNS opens p after CheckNetNS's checks; its descriptor is what the
// namespace is used through afterwards (the path may change under us).
func openNetNS(p string) (*os.File, error) {
	if p == "" {
		return nil, errors.New("network namespace: missing: a tap network needs the pod's network namespace (/proc/PID/ns/net or /run/netns/NAME)")
	}
	if len(p) > 256 || filepath.Clean(p) != p || !netNSPath.MatchString(p) {
		return nil, fmt.Errorf("network namespace %.64q: want /proc/PID/ns/net, /proc/PID/task/TID/ns/net or /run/netns/NAME (or /var/run/netns/NAME)", p)
	}
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	typ, err := unix.IoctlRetInt(int(f.Fd()), nsGetNSType)
	if err != nil || typ != unix.CLONE_NEWNET {
		f.Close()
		return nil, fmt.Errorf("network namespace %s: not a network namespace", p)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	for _, host := range []string{"/proc/thread-self/ns/net", "/proc/self/ns/net", "/proc/1/ns/net"} {
		var h unix.Stat_t
		if unix.Stat(host, &h) == nil && h.Dev == st.Dev && h.Ino == st.Ino {
			f.Close()
			return nil, fmt.Errorf("network namespace %s is the host's: a tap network takes over all of a namespace's traffic; give the pod a namespace of its own", p)
		}
	}
	return f, nil
}

// podNet is a pod's interface as the guest takes it over.
type podNet struct {
	tap     *os.File     // the tap's descriptor, for QEMU
	mac     string       // the pod interface's MAC, the guest's
	addr    netip.Prefix // its IPv4 address
	gateway netip.Addr   // its IPv4 default route's gateway; invalid: none
	iface   string       // its name in the namespace (eth0)
}

// openPodTap creates the tap in the network namespace at nsPath and
// redirects its traffic to and from the namespace's pod interface.
func openPodTap(nsPath string) (*podNet, error) {
	nsf, err := openNetNS(nsPath)
	if err != nil {
		return nil, err
	}
	defer nsf.Close()
	ns := netns.NsHandle(nsf.Fd())
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	pod, err := podLink(h)
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", nsPath, err)
	}
	pn := &podNet{iface: pod.Attrs().Name, mac: pod.Attrs().HardwareAddr.String()}
	if pn.addr, err = podAddr(h, pod); err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", nsPath, err)
	}
	if pn.gateway, err = podGateway(h, pod); err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", nsPath, err)
	}
	if len(pod.Attrs().HardwareAddr) != 6 {
		return nil, fmt.Errorf("network namespace %s: %s has no Ethernet address", nsPath, pn.iface)
	}
	tap, err := createTap(ns, tapName)
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: creating the tap: %w", nsPath, err)
	}
	ok := false
	defer func() {
		if !ok {
			tap.Close() // the tap goes with it
			h.QdiscDel(ingressOf(pod.Attrs().Index))
		}
	}()
	tl, err := h.LinkByName(tapName)
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: the tap: %w", nsPath, err)
	}
	if mtu := pod.Attrs().MTU; mtu > 0 {
		if err := h.LinkSetMTU(tl, mtu); err != nil {
			return nil, fmt.Errorf("network namespace %s: the tap's MTU: %w", nsPath, err)
		}
	}
	if err := h.LinkSetUp(tl); err != nil {
		return nil, fmt.Errorf("network namespace %s: bringing the tap up: %w", nsPath, err)
	}
	if err := redirect(h, pod.Attrs().Index, tl.Attrs().Index); err != nil {
		return nil, fmt.Errorf("network namespace %s: redirecting %s to the tap: %w", nsPath, pn.iface, err)
	}
	if err := redirect(h, tl.Attrs().Index, pod.Attrs().Index); err != nil {
		return nil, fmt.Errorf("network namespace %s: redirecting the tap to %s: %w", nsPath, pn.iface, err)
	}
	ok = true
	pn.tap = tap
	return pn, nil
}

// podLink finds the pod's interface: eth0 (the CRI's name for it), else
// the namespace's one interface other than lo and a tap of ours.
func podLink(h *netlink.Handle) (netlink.Link, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	var cands []netlink.Link
	for _, l := range links {
		a := l.Attrs()
		if a.Name == "eth0" {
			return l, nil
		}
		if a.Name != "lo" && a.Name != tapName {
			cands = append(cands, l)
		}
	}
	switch len(cands) {
	case 1:
		return cands[0], nil
	case 0:
		return nil, errors.New("no interface but lo: the pod has no network (did the CNI plugin run?)")
	}
	names := make([]string, len(cands))
	for i, l := range cands {
		names[i] = l.Attrs().Name
	}
	return nil, fmt.Errorf("no eth0 and several interfaces (%s): which is the pod's?", strings.Join(names, ", "))
}

// podAddr is the interface's (first global) IPv4 address.
func podAddr(h *netlink.Handle, l netlink.Link) (netip.Prefix, error) {
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		ones, _ := a.Mask.Size()
		if ok && a.Scope == unix.RT_SCOPE_UNIVERSE && ones > 0 {
			return netip.PrefixFrom(ip, ones), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("%s has no IPv4 address (IPv6-only pods are not supported)", l.Attrs().Name)
}

// podGateway is the gateway of the interface's IPv4 default route, if any.
func podGateway(h *netlink.Handle, l netlink.Link) (netip.Addr, error) {
	routes, err := h.RouteList(l, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified() && maskBits(r.Dst.Mask) == 0) && r.Gw != nil {
			if gw, ok := netip.AddrFromSlice(r.Gw.To4()); ok {
				return gw, nil
			}
		}
	}
	return netip.Addr{}, nil
}

func maskBits(m net.IPMask) int {
	ones, _ := m.Size()
	return ones
}

// ingressOf is the ingress qdisc of interface index.
func ingressOf(index int) *netlink.Ingress {
	return &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS,
	}}
}

// redirect sends every frame arriving on interface from out of interface
// to: an ingress qdisc on from (a previous one replaced) with a match-all
// u32 filter whose action is mirred egress redirect.
func redirect(h *netlink.Handle, from, to int) error {
	h.QdiscDel(ingressOf(from)) // a former sandbox's, if any
	if err := h.QdiscAdd(ingressOf(from)); err != nil {
		return fmt.Errorf("ingress qdisc: %w", err)
	}
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from, Parent: netlink.MakeHandle(0xffff, 0), Priority: 1, Protocol: unix.ETH_P_ALL,
		},
		Actions: []netlink.Action{&netlink.MirredAction{
			ActionAttrs:  netlink.ActionAttrs{Action: netlink.TC_ACT_STOLEN},
			MirredAction: netlink.TCA_EGRESS_REDIR,
			Ifindex:      to,
		}},
	}
	if err := h.FilterAdd(f); err != nil {
		return fmt.Errorf("mirred filter: %w", err)
	}
	return nil
}

// createTap opens /dev/net/tun inside the network namespace ns and makes
// a (non-persistent) tap named name there: the tap belongs to the
// namespace the creating thread is in. The work runs on a thread of its
// own, moved into ns and never moved back: it ends with its goroutine,
// so no other goroutine ever runs in the pod's namespace.
func createTap(ns netns.NsHandle, name string) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	done := make(chan result, 1)
	goLockedOffMain(func() {
		if err := unix.Setns(int(ns), unix.CLONE_NEWNET); err != nil {
			done <- result{err: fmt.Errorf("entering the namespace: %w", err)}
			return
		}
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- result{err: fmt.Errorf("/dev/net/tun: %w", err)}
			return
		}
		var req [unix.IFNAMSIZ + 64]byte // struct ifreq
		copy(req[:unix.IFNAMSIZ-1], name)
		*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = unix.IFF_TAP | unix.IFF_NO_PI
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
			unix.Close(fd)
			if e == unix.EBUSY || e == unix.EEXIST {
				done <- result{err: fmt.Errorf("TUNSETIFF %s: %w (another sandbox's tap is in this namespace)", name, e)}
				return
			}
			done <- result{err: fmt.Errorf("TUNSETIFF %s: %w", name, e)}
			return
		}
		done <- result{f: os.NewFile(uintptr(fd), "tap:"+name)}
	})
	r := <-done
	return r.f, r.err
}

// goLockedOffMain runs f in a new goroutine locked to a thread other than
// the process's main thread, and ends that thread with f: f may change the
// thread's namespaces and leave them so. (The runtime never ends the main
// thread, it parks it, and /proc/self/ns/ is the main thread's: it must
// stay in the host's namespaces.)
func goLockedOffMain(f func()) {
	go func() {
		runtime.LockOSThread() // not unlocked: the thread ends with the goroutine
		if unix.Gettid() == unix.Getpid() {
			// The main thread: hold it while another goroutine, which
			// so cannot get it, takes f.
			locked := make(chan struct{})
			goLockedOffMain(func() { close(locked); f() })
			<-locked
			runtime.UnlockOSThread()
			return
		}
		f()
	}()
}
