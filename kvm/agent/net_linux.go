package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// netWait bounds the wait for eth0 after virtio_net is loaded.
const netWait = 20 * time.Second

// setupNetwork gives the workload its network (start.Network, validated):
// it loads the network modules, brings lo and eth0 up, and gives eth0 an
// address and a default route (over netlink: the guest has no ip binary).
// QEMU's user-mode network: channel.GuestAddr through channel.GuestGateway,
// and the image's /etc/resolv.conf pointed at channel.GuestDNS. A tap
// joined to a pod's interface: the pod's address, gateway and MAC from
// START (a cold boot's eth0 has that MAC already, from QEMU; a clone's
// has its template's, the device state it resumed); the resolver is left
// as the image has it. Nothing is configured before START: a template's
// guest, snapshotted before it, holds no address, lease or MAC of a
// clone's.
func setupNetwork(log *slog.Logger, st *channel.Start) error {
	start := time.Now()
	man, err := readManifest()
	if err != nil {
		return err
	}
	if len(man.NetModules) == 0 {
		return errors.New("the base initramfs has no network modules (virtio_net): it predates --net user or its kernel has no virtio_net module; rebuild it with 'launcher initrd build'")
	}
	if err := loadModuleFiles(man.NetModules); err != nil {
		return err
	}
	eth, err := waitLink("eth0", netWait)
	if err != nil {
		return err
	}
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	addr := netip.MustParsePrefix(channel.GuestAddr)
	gw := netip.MustParseAddr(channel.GuestGateway)
	if st.Network == channel.NetworkTap {
		if addr, err = netip.ParsePrefix(st.Address); err != nil {
			return fmt.Errorf("address: %w", err)
		}
		gw = netip.Addr{}
		if st.Gateway != "" {
			if gw, err = netip.ParseAddr(st.Gateway); err != nil {
				return fmt.Errorf("gateway: %w", err)
			}
		}
	}
	nl, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer unix.Close(nl)
	if err := unix.Bind(nl, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	type step struct {
		what string
		typ  uint16
		body []byte
	}
	steps := []step{{"bringing lo up", unix.RTM_NEWLINK, linkUp(lo.Index)}}
	if st.Network == channel.NetworkTap && st.MAC != "" && st.MAC != eth.HardwareAddr.String() {
		mac, err := net.ParseMAC(st.MAC)
		if err != nil {
			return fmt.Errorf("MAC: %w", err)
		}
		steps = append(steps, step{"setting eth0's MAC to " + st.MAC, unix.RTM_NEWLINK, linkSetMAC(eth.Index, mac)})
	}
	steps = append(steps,
		step{"bringing eth0 up", unix.RTM_NEWLINK, linkUp(eth.Index)},
		step{"adding " + addr.String() + " to eth0", unix.RTM_NEWADDR, addAddr(eth.Index, addr)})
	if gw.IsValid() {
		steps = append(steps, step{"adding the default route via " + gw.String(), unix.RTM_NEWROUTE, addDefaultRoute(eth.Index, gw)})
	}
	for i, step := range steps {
		if err := netlinkDo(nl, uint32(i+1), step.typ, step.body); err != nil {
			return fmt.Errorf("%s: %w", step.what, err)
		}
	}
	if st.Network == channel.NetworkUser {
		if err := writeResolvConf(); err != nil {
			return err
		}
	}
	log.Info("network configured", "mode", st.Network, "eth0", addr.String(), "gateway", gw.String(), "took", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// waitLink waits for the network interface name to appear.
func waitLink(name string, wait time.Duration) (*net.Interface, error) {
	deadline := time.Now().Add(wait)
	for {
		ifc, err := net.InterfaceByName(name)
		if err == nil {
			return ifc, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not appear within %v (virtio_net loaded? -device virtio-net-device given?)", name, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeResolvConf points the workload's resolver at slirp's DNS proxy,
// through a symlink-free path inside the root (the image's /etc may be a
// link: then the file is left as the image has it).
func writeResolvConf() error {
	etc := path.Join(channel.RootfsDir, "etc")
	st, err := os.Lstat(etc)
	if err != nil || !st.IsDir() {
		return nil
	}
	p := path.Join(etc, "resolv.conf")
	if st, err := os.Lstat(p); err == nil && !st.Mode().IsRegular() {
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("resolv.conf: %w", err)
		}
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	_, err = f.WriteString("nameserver " + channel.GuestDNS + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// netlinkDo sends one request (NLM_F_ACK) and reads its acknowledgement.
func netlinkDo(fd int, seq uint32, typ uint16, body []byte) error {
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body))
	msg = append(msg, body...)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	flags := uint16(unix.NLM_F_REQUEST | unix.NLM_F_ACK)
	if typ != unix.RTM_NEWLINK { // a link is changed, an address or route made
		flags |= unix.NLM_F_CREATE | unix.NLM_F_EXCL
	}
	binary.NativeEndian.PutUint16(msg[6:], flags)
	binary.NativeEndian.PutUint32(msg[8:], seq)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("short netlink error message")
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				return unix.Errno(-code)
			}
			return nil
		}
	}
}

// linkUp is an RTM_NEWLINK body setting IFF_UP on interface index.
func linkUp(index int) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:], uint32(int32(index)))
	binary.NativeEndian.PutUint32(b[8:], unix.IFF_UP)  // flags
	binary.NativeEndian.PutUint32(b[12:], unix.IFF_UP) // change
	return b
}

// linkSetMAC is an RTM_NEWLINK body giving interface index the Ethernet
// address mac (virtio_net tells the device, so that QEMU's receive filter
// lets frames to it through).
func linkSetMAC(index int, mac net.HardwareAddr) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:], uint32(int32(index)))
	return appendAttr(b, unix.IFLA_ADDRESS, mac)
}

// addAddr is an RTM_NEWADDR body: p on interface index.
func addAddr(index int, p netip.Prefix) []byte {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0] = unix.AF_INET
	b[1] = byte(p.Bits())
	b[3] = unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(b[4:], uint32(int32(index)))
	a := p.Addr().As4()
	b = appendAttr(b, unix.IFA_LOCAL, a[:])
	return appendAttr(b, unix.IFA_ADDRESS, a[:])
}

// addDefaultRoute is an RTM_NEWROUTE body: 0.0.0.0/0 via gw on index.
func addDefaultRoute(index int, gw netip.Addr) []byte {
	b := make([]byte, unix.SizeofRtMsg)
	b[0] = unix.AF_INET
	b[4] = unix.RT_TABLE_MAIN
	b[5] = unix.RTPROT_BOOT
	b[6] = unix.RT_SCOPE_UNIVERSE
	b[7] = unix.RTN_UNICAST
	g := gw.As4()
	b = appendAttr(b, unix.RTA_GATEWAY, g[:])
	var oif [4]byte
	binary.NativeEndian.PutUint32(oif[:], uint32(int32(index)))
	return appendAttr(b, unix.RTA_OIF, oif[:])
}

// appendAttr appends one rtattr, padded to 4 bytes.
func appendAttr(b []byte, typ uint16, v []byte) []byte {
	var h [unix.SizeofRtAttr]byte
	binary.NativeEndian.PutUint16(h[0:], uint16(unix.SizeofRtAttr+len(v)))
	binary.NativeEndian.PutUint16(h[2:], typ)
	b = append(append(b, h[:]...), v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
