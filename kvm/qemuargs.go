package kvm

import (
	"strconv"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// qemuSpec is everything QEMU's command line depends on. Paths are as QEMU
// sees them (/proc/self/fd/N for inherited files); qmpFD and channelFD are
// the descriptor numbers of the listening sockets QEMU inherits.
type qemuSpec struct {
	name             string
	accel            string // AccelKVM or AccelTCG (already chosen)
	cpus, memoryMiB  int
	qmpFD, channelFD int
	kernel, initrd   string
	disk             string // the image disk (or its placeholder)
	cmdline          string
	// Templates: ram is the guest RAM's file, shared (a template being
	// made) or mapped privately (a clone: copy-on-write); incoming waits
	// for the device state over QMP instead of booting, and has no
	// kernel, initramfs or command line of its own.
	ram       string
	ramShared bool
	incoming  bool
	// tbSizeMiB is the TCG translation cache in MiB (0: tcgTBSizeMiB). It
	// is not part of a template's machine: the cache is QEMU's, never in
	// a snapshot.
	tbSizeMiB int
	// network: "" (no device), NetworkUser, with ports forwarded,
	// NetworkTap: the tap QEMU inherits as descriptor tapFD, the guest's
	// device with MAC mac, or netTemplate: a template's device, on a
	// backend that reaches nothing.
	network string
	ports   []PortForward
	tapFD   int
	mac     string
	// volumes are read-only volume disks (paths), in order.
	volumes []string
	// scratch are writable scratch disks (paths), in order; a template
	// and its clones (ram set) always have MaxScratch of them, the
	// unused ones on placeholders ("" in a recipe's machine).
	scratch []string
	// podSlots is the number of a pod's container image slots: read-only
	// disks that read zeros at boot, filled over QMP (podslot.go).
	podSlots int
}

// qemuArgs is QEMU's command line for a sandbox: a microvm with no
// firmware, no default devices and no network; QMP and the guest channel on
// inherited sockets; the serial console on stdout; virtio-rng from the
// host; the image disk read-only; QEMU's seccomp filter denying exec, privilege changes, resource
// control and obsolete calls. It starts paused (-S): Start continues the
// guest once the channel is connected. A pure function of its input.
func qemuArgs(q qemuSpec) []string {
	start := []string{"-S"}
	if q.incoming {
		start = []string{"-incoming", "defer"} // paused until migrate-incoming completes
	}
	args := []string{
		"-name", "bulwark-" + q.name,
		"-M", "microvm,x-option-roms=off,pit=on,rtc=on,isa-serial=on",
		"-accel", accelArg(q.accel, q.tbSizeMiB),
		"-cpu", cpuModel(q.accel),
		"-smp", strconv.Itoa(q.cpus),
		"-m", strconv.Itoa(q.memoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		// seccomp: no exec, no privilege changes, no obsolete syscalls.
		"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		"-chardev", "socket,id=qmp,fd=" + strconv.Itoa(q.qmpFD) + ",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-chardev", "stdio,id=con,signal=off",
		"-serial", "chardev:con",
		"-device", "virtio-serial-device,max_ports=2",
		"-chardev", "socket,id=c0,fd=" + strconv.Itoa(q.channelFD) + ",server=on,wait=off",
		"-device", "virtserialport,chardev=c0,name=" + channel.PortName,
		"-object", "rng-random,id=rng0,filename=/dev/urandom",
		"-device", "virtio-rng-device,rng=rng0",
		// The image disk: read-only, no cache of QEMU's own (the memfd is
		// memory already), no probing of its format.
		"-drive", "id=image,if=none,format=raw,readonly=on,file=" + q.disk,
		"-device", "virtio-blk-device,drive=image",
	}
	if !q.incoming || q.kernel != "" {
		// A clone (incoming) resumes its template's memory, which holds
		// the kernel, the initramfs and the command line already.
		args = append(args, "-kernel", q.kernel, "-initrd", q.initrd, "-append", q.cmdline)
	}
	for i, v := range q.volumes {
		// After the image disk, so that it stays the guest's vda; found
		// by the agent through its serial.
		id := "vol" + strconv.Itoa(i)
		args = append(args, "-drive", "id="+id+",if=none,format=raw,readonly=on,file="+v,
			"-device", "virtio-blk-device,drive="+id+",serial="+volumeSerial(i))
	}
	nScratch := len(q.scratch)
	if q.ram != "" {
		nScratch = MaxScratch
	}
	for i := range nScratch {
		// Writable, after the image and the volumes, found by the agent
		// through its serial; the guest may discard (fstrim) to give
		// the host file's blocks back.
		id, file := "scr"+strconv.Itoa(i), ""
		if i < len(q.scratch) {
			file = q.scratch[i]
		}
		args = append(args, "-drive", "id="+id+",if=none,format=raw,discard=unmap,file="+file,
			"-device", "virtio-blk-device,drive="+id+",serial="+scratchSerial(i))
	}
	for i := 1; i <= q.podSlots; i++ {
		// A pod's container image slots, found by their serial: empty
		// (zeros, no memory) until the host swaps an image in under the
		// raw node's name (podslot.go).
		args = append(args, "-drive", "id="+podSlotDevice(i)+",node-name="+podSlotNode(i)+",if=none,format=raw,readonly=on,"+
			"file.driver=null-co,file.read-zeroes=on,file.size="+strconv.Itoa(DiskSlotSize),
			"-device", "virtio-blk-device,drive="+podSlotDevice(i)+",serial="+channel.ContainerSlotSerial(i))
	}
	if q.network == NetworkUser {
		// The guest reaches the host's network through QEMU (slirp),
		// which also listens on the forwarded ports; the device is
		// virtio-mmio, as every device of a microvm.
		nd := "user,id=n0,net=10.0.2.0/24,host=" + channel.GuestGateway + ",dns=" + channel.GuestDNS + ",dhcpstart=10.0.2.15,ipv6=off"
		for _, p := range q.ports {
			nd += ",hostfwd=tcp:" + p.HostIP.String() + ":" + strconv.Itoa(int(p.HostPort)) + "-:" + strconv.Itoa(int(p.GuestPort))
		}
		args = append(args, "-netdev", nd, "-device", "virtio-net-device,netdev=n0")
	}
	if q.network == NetworkTap {
		// The tap is opened by the launcher in the pod's namespace: QEMU
		// neither opens /dev/net/tun nor runs a script.
		args = append(args, "-netdev", "tap,id=n0,fd="+strconv.Itoa(q.tapFD),
			"-device", "virtio-net-device,netdev=n0,mac="+q.mac)
	}
	if q.network == netTemplate {
		// A template's device (and a recipe's machine): a port of a hub
		// with no other port, so frames go nowhere. Its backend has no
		// migration state (slirp's would be refused by a tap clone), and
		// each clone gives the device, netdev n0, a backend of its own.
		args = append(args, "-netdev", "hubport,id=n0,hubid=0", "-device", "virtio-net-device,netdev=n0")
	}
	args = append(args, start...)
	if q.ram != "" {
		share := "off"
		if q.ramShared {
			share = "on"
		}
		args = append(args,
			"-object", "memory-backend-file,id=mem,size="+strconv.Itoa(q.memoryMiB)+"M,mem-path="+q.ram+",share="+share,
			"-machine", "memory-backend=mem")
	}
	return args
}

// netTemplate is qemuSpec.network for a template's network device.
const netTemplate = "template"

// accelArg is QEMU's -accel value. Under TCG the translation cache is 16 MiB
// rather than QEMU 7.2's default (a quarter of guest RAM, up to 1 GiB):
// measured here it saves ≈ 28 MiB per idle VM at no measurable cost in
// speed for a sandbox's short-lived workloads.
func accelArg(accel string, tbSizeMiB int) string {
	if accel == AccelTCG {
		if tbSizeMiB <= 0 {
			tbSizeMiB = tcgTBSizeMiB
		}
		return AccelTCG + ",tb-size=" + strconv.Itoa(tbSizeMiB)
	}
	return accel
}

// tcgTBSizeMiB is a TCG sandbox's translation cache, a clone's too: a
// clone's start alone fills 16 MiB, and a smaller cache flushes during it
// and makes it 15–33 % slower (docs/performance.md, 2026-12-05).
const tcgTBSizeMiB = 16

// cpuModel is the guest CPU: the host's under KVM; under TCG QEMU's
// default model plus RDRAND (emulated from the host's getrandom), so the
// guest kernel's random pool is ready early in boot (CONFIG_RANDOM_TRUST_CPU)
// instead of after seconds of waiting for entropy, and ARAT ("always
// running APIC timer", true of QEMU's emulated APIC). Without ARAT the
// guest kernel has no one-shot timer it trusts in idle and never goes
// tickless: it takes 250 timer interrupts a second, idle, which cost each
// idle TCG guest ≈ 4–6 % of a host core; with it ≈ 1 % (measured here).
func cpuModel(accel string) string {
	if accel == AccelKVM {
		return "host"
	}
	return "qemu64,+rdrand,+arat"
}

// cloneTBSizeMiB is a clone's TCG translation cache in MiB (see
// accelArg); qemuEnv is QEMU's environment besides PATH; cloneNoTHP runs
// a TCG clone's QEMU without transparent huge pages (Sandbox.cloneNoTHP);
// cloneKernel gives clones the kernel and initramfs as cold boots (only
// to measure what leaving them out saves).
// Variables, so that the benchmarks can compare choices in one run.
var (
	cloneTBSizeMiB = tcgTBSizeMiB
	qemuEnv        []string
	cloneNoTHP     = true
	cloneKernel    = false
)
