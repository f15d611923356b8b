package kvm

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// TestQEMUArgs pins what each accelerator puts on QEMU's command line, and
// what every sandbox has whatever the accelerator.
func TestQEMUArgs(t *testing.T) {
	spec := qemuSpec{name: "sb1", cpus: 2, memoryMiB: 256, qmpFD: 3, channelFD: 4,
		kernel: "/proc/self/fd/5", initrd: "/proc/self/fd/6", disk: "/proc/self/fd/7", cmdline: "console=ttyS0"}
	flag := func(args []string, name string) string {
		i := slices.Index(args, name)
		if i < 0 || i+1 >= len(args) {
			return ""
		}
		return args[i+1]
	}
	for _, tc := range []struct {
		accel, wantAccel, wantCPU string
	}{
		{AccelTCG, "tcg,tb-size=16", "qemu64,+rdrand,+arat"},
		{AccelKVM, "kvm", "host"},
	} {
		t.Run(tc.accel, func(t *testing.T) {
			sp := spec
			sp.accel = tc.accel
			args := qemuArgs(sp)
			for name, want := range map[string]string{
				"-accel": tc.wantAccel, "-cpu": tc.wantCPU, "-smp": "2", "-m": "256",
				"-name": "bulwark-sb1", "-kernel": "/proc/self/fd/5", "-initrd": "/proc/self/fd/6", "-append": "console=ttyS0",
				"-sandbox": "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
			} {
				if got := flag(args, name); got != want {
					t.Errorf("%s %q, want %q", name, got, want)
				}
			}
			joined := strings.Join(args, " ")
			for _, want := range []string{
				"-chardev socket,id=qmp,fd=3,server=on,wait=off",
				"-chardev socket,id=c0,fd=4,server=on,wait=off",
				"-nodefaults", "-no-user-config", "-S",
				"-drive id=image,if=none,format=raw,readonly=on,file=/proc/self/fd/7 -device virtio-blk-device,drive=image",
			} {
				if !strings.Contains(joined, want) {
					t.Errorf("no %q in %s", want, joined)
				}
			}
			// No network, one disk (read-only): what a sandbox gets is only what is listed.
			for _, bad := range []string{"-netdev", "-nic", "-net "} {
				if strings.Contains(joined, bad) {
					t.Errorf("%q in %s", bad, joined)
				}
			}
			if n := strings.Count(joined, "-drive "); n != 1 {
				t.Errorf("%d drives in %s", n, joined)
			}
			if !slices.Equal(args, qemuArgs(sp)) {
				t.Error("qemuArgs is not a pure function of its input")
			}
		})
	}
}

// TestQEMUArgsUserNetwork: --net user adds one virtio-net device on QEMU's
// user-mode network with the guest's fixed addresses and each forward.
func TestQEMUArgsUserNetwork(t *testing.T) {
	spec := qemuSpec{name: "sb1", accel: AccelTCG, cpus: 1, memoryMiB: 256, qmpFD: 3, channelFD: 4,
		kernel: "k", initrd: "i", disk: "d", cmdline: "console=ttyS0", network: NetworkUser,
		ports: []PortForward{
			{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 8080, GuestPort: 80},
			{HostIP: netip.MustParseAddr("0.0.0.0"), HostPort: 0, GuestPort: 22},
		}}
	joined := strings.Join(qemuArgs(spec), " ")
	want := "-netdev user,id=n0,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,dhcpstart=10.0.2.15,ipv6=off," +
		"hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:0.0.0.0:0-:22 -device virtio-net-device,netdev=n0"
	if !strings.Contains(joined, want) {
		t.Errorf("no %q in %s", want, joined)
	}
	spec.volumes = []string{"/proc/self/fd/9", "/proc/self/fd/10"}
	joined = strings.Join(qemuArgs(spec), " ")
	for _, want := range []string{
		"-append console=ttyS0 -drive id=vol0,if=none,format=raw,readonly=on,file=/proc/self/fd/9 " +
			"-device virtio-blk-device,drive=vol0,serial=bulwark-vol0 -drive id=vol1,if=none,format=raw,readonly=on,file=/proc/self/fd/10 -device virtio-blk-device,drive=vol1,serial=bulwark-vol1",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("volumes: no %q in %s", want, joined)
		}
	}
	spec.network, spec.ports, spec.volumes = "", nil, nil
	if joined := strings.Join(qemuArgs(spec), " "); strings.Contains(joined, "-netdev") || strings.Contains(joined, "virtio-net") {
		t.Errorf("a network without --net user: %s", joined)
	}
}

// TestQEMUArgsScratch: a cold boot has one writable drive per scratch
// disk, found by its serial; a template and its clones always have
// MaxScratch scratch slots, whatever they hold, so the machine (and the
// recipe) does not depend on how many a clone uses.
func TestQEMUArgsScratch(t *testing.T) {
	spec := qemuSpec{name: "sb1", accel: AccelTCG, cpus: 1, memoryMiB: 256, qmpFD: 3, channelFD: 4,
		kernel: "k", initrd: "i", disk: "d", cmdline: "console=ttyS0", scratch: []string{"/proc/self/fd/9"}}
	joined := strings.Join(qemuArgs(spec), " ")
	want := "-drive id=scr0,if=none,format=raw,discard=unmap,file=/proc/self/fd/9 -device virtio-blk-device,drive=scr0,serial=bulwark-scratch0"
	if !strings.Contains(joined, want) || strings.Count(joined, "-drive ") != 2 || strings.Contains(joined, "scr0,if=none,format=raw,readonly") {
		t.Errorf("cold boot: want the image and %q (writable) in %s", want, joined)
	}
	spec.scratch = nil
	if joined := strings.Join(qemuArgs(spec), " "); strings.Contains(joined, "scr0") {
		t.Errorf("a scratch drive without a scratch disk: %s", joined)
	}
	spec.ram = "RAM"
	template := qemuArgs(spec)
	if n := strings.Count(strings.Join(template, " "), "serial=bulwark-scratch"); n != MaxScratch {
		t.Errorf("%d scratch slots in a template's machine, want %d", n, MaxScratch)
	}
	spec.scratch = []string{"a", "b", "c", "d"}
	clone := qemuArgs(spec)
	if len(clone) != len(template) {
		t.Errorf("a clone's command line has other options than its template's:\n%v\n%v", clone, template)
	}
}

// TestQEMUArgsTapNetwork: a tap network is one virtio-net device on the
// inherited tap descriptor, with the pod interface's MAC; QEMU opens no
// tun device and runs no script.
func TestQEMUArgsTapNetwork(t *testing.T) {
	spec := qemuSpec{name: "sb1", accel: AccelTCG, cpus: 1, memoryMiB: 256, qmpFD: 3, channelFD: 4,
		kernel: "k", initrd: "i", disk: "d", cmdline: "console=ttyS0", network: NetworkTap, tapFD: 7, mac: "02:42:0a:58:00:05"}
	joined := strings.Join(qemuArgs(spec), " ")
	want := "-netdev tap,id=n0,fd=7 -device virtio-net-device,netdev=n0,mac=02:42:0a:58:00:05"
	if !strings.Contains(joined, want) {
		t.Errorf("no %q in %s", want, joined)
	}
	for _, bad := range []string{"ifname=", "script=", "vhost", "-netdev user"} {
		if strings.Contains(joined, bad) {
			t.Errorf("%q in %s", bad, joined)
		}
	}
}

func TestParseUsernet(t *testing.T) {
	out := "Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n" +
		"  TCP[HOST_FORWARD]   3       127.0.0.1 36729       10.0.2.15    80     0     0\r\n" +
		"  TCP[ESTABLISHED]   9       127.0.0.1 40000       10.0.2.15    80     0     0\r\n" +
		"  TCP[HOST_FORWARD]   4         0.0.0.0  2222       10.0.2.15    22     0     0\r\n"
	got := parseUsernet(out)
	want := []PortForward{
		{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 36729, GuestPort: 80},
		{HostIP: netip.MustParseAddr("0.0.0.0"), HostPort: 2222, GuestPort: 22},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("parseUsernet = %v, want %v", got, want)
	}
}

// TestConfigNetworkRefusals: a network Start cannot give is refused before
// QEMU runs, saying why.
func TestConfigNetworkRefusals(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"ports without network", func(c *Config) { c.Ports = []PortForward{{HostIP: lo, HostPort: 1, GuestPort: 1}} }, "need Network"},
		{"unknown network", func(c *Config) { c.Network = "bridge" }, `network "bridge"`},
		{"a template's device with a network", func(c *Config) { c.Network, c.TemplateNet = NetworkUser, true }, "a template is made without a Network"},
		{"tap without a namespace", func(c *Config) { c.Network = NetworkTap }, "network namespace: missing"},
		{"tap with ports", func(c *Config) {
			c.Network, c.NetNS, c.Ports = NetworkTap, "/run/netns/x", []PortForward{{HostIP: lo, HostPort: 1, GuestPort: 1}}
		}, "need Network = NetworkUser"},
		{"tap in the host's namespace", func(c *Config) { c.Network, c.NetNS = NetworkTap, fmt.Sprintf("/proc/%d/ns/net", os.Getpid()) }, "is the host's"},
		{"namespace without a tap", func(c *Config) { c.Network, c.NetNS = NetworkUser, "/run/netns/x" }, "needs Network = NetworkTap"},
		{"guest port 0", func(c *Config) { c.Network, c.Ports = NetworkUser, []PortForward{{HostIP: lo, HostPort: 1}} }, "guest port"},
		{"IPv6 host", func(c *Config) {
			c.Network, c.Ports = NetworkUser, []PortForward{{HostIP: netip.MustParseAddr("::1"), HostPort: 1, GuestPort: 1}}
		}, "IPv4"},
		{"forwarded twice", func(c *Config) {
			c.Network, c.Ports = NetworkUser, []PortForward{{HostIP: lo, HostPort: 1, GuestPort: 1}, {HostIP: lo, HostPort: 1, GuestPort: 2}}
		}, "forwarded twice"},
		{"too many forwards", func(c *Config) { c.Network, c.Ports = NetworkUser, make([]PortForward, MaxPorts+1) }, "limit"},
		{"env without =", func(c *Config) { c.Env = []string{"A"} }, "KEY=VALUE"},
		{"clone with a volume", func(c *Config) { c.Volumes, c.Template = []VolumeDisk{{File: os.Stdin, Target: "/data"}}, &Template{} }, "a clone cannot have volumes"},
		{"volume without a disk", func(c *Config) { c.Volumes = []VolumeDisk{{Target: "/data"}} }, "has no disk"},
		{"too many tmpfs", func(c *Config) { c.Tmpfs = make([]TmpfsMount, MaxVolumes+1) }, "limit"},
		{"tmpfs at the root", func(c *Config) { c.Tmpfs = []TmpfsMount{{Target: "/"}} }, "mount 0: target"},
		{"relative workdir", func(c *Config) { c.WorkingDir = "srv" }, "working directory"},
		{"too many scratch disks", func(c *Config) {
			for i := range MaxScratch + 1 {
				c.Scratch = append(c.Scratch, ScratchDisk{File: os.Stdin, Target: "/s" + string(rune('a'+i)), Size: MinScratchBytes})
			}
		}, "5 scratch disks, the limit is 4"},
		{"scratch without a file", func(c *Config) { c.Scratch = []ScratchDisk{{Target: "/s", Size: MinScratchBytes}} }, "has no file"},
		{"scratch too small", func(c *Config) { c.Scratch = []ScratchDisk{{File: os.Stdin, Target: "/s", Size: 1 << 20}} }, "of 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{KernelPath: "k", InitrdPath: "i"}
			tc.mod(&cfg)
			err := cfg.setDefaults()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestPodSlotCount: a pod's image slots take the microvm's virtio
// transports its other devices leave, up to MaxPodSlots, and no pod's
// command line asks for more transports than the machine has (QEMU
// would refuse the 25th device: "No 'virtio-bus' bus found").
func TestPodSlotCount(t *testing.T) {
	base := qemuSpec{name: "sb1", accel: AccelTCG, cpus: 1, memoryMiB: 256, qmpFD: 3, channelFD: 4,
		kernel: "k", initrd: "i", disk: "d", cmdline: "console=ttyS0"}
	full := base
	full.volumes = make([]string, MaxVolumes)
	full.scratch = make([]string, MaxScratch)
	full.network, full.tapFD, full.mac = NetworkTap, 7, "02:42:0a:58:00:05"
	template := base
	template.ram = "RAM" // a template's and a clone's machine: every scratch slot
	for _, tc := range []struct {
		name string
		spec qemuSpec
		want int
	}{
		{"cold pod", base, MaxPodSlots},
		{"template or clone", template, MaxPodSlots},
		{"every volume, scratch disk and a network", full, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := podSlotCount(tc.spec)
			if n != tc.want {
				t.Errorf("%d slots, want %d", n, tc.want)
			}
			sp := tc.spec
			sp.podSlots = n
			args := qemuArgs(sp)
			if got := virtioTransports(args); got > microvmTransports {
				t.Errorf("%d virtio devices, the microvm has %d transports", got, microvmTransports)
			}
			joined := strings.Join(args, " ")
			if last := "serial=" + channel.ContainerSlotSerial(n); !strings.Contains(joined, last) {
				t.Errorf("no slot %d (%s) in %s", n, last, joined)
			}
		})
	}
}

// TestRecipePodSlots: a pod's template recipe says how many image slots
// its machine has and differs from the recipe without them (digest and
// machine); a recipe without pod slots encodes as before pods had
// templates, so existing templates keep their digests.
func TestRecipePodSlots(t *testing.T) {
	e := bootEnv(t)
	cfg := templateConfig(t, e)
	plain, err := cfg.Recipe()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pod = true
	pod, err := cfg.Recipe()
	if err != nil {
		t.Fatal(err)
	}
	if plain.PodSlots != 0 || pod.PodSlots != MaxPodSlots {
		t.Errorf("pod slots: %d without Pod, %d with, want 0 and %d", plain.PodSlots, pod.PodSlots, MaxPodSlots)
	}
	if plain.Machine == pod.Machine || plain.Digest() == pod.Digest() {
		t.Error("a pod's template recipe has the same machine or digest as a plain one")
	}
	d := plain.differences(pod)
	if len(d) != 1 || d[0] != "pod image slots: the template has none (made without --pod), this launch is a pod's (15 slots)" {
		t.Errorf("differences: %q", d)
	}
	b, _ := json.Marshal(plain)
	if strings.Contains(string(b), "pod_slots") {
		t.Errorf("a recipe without pod slots encodes them: %s", b)
	}
}

// TestQEMUArgsClone: a clone's command line is its template's machine,
// and differs from the template's own only where a clone must (it waits
// for the device state instead of booting, maps the RAM privately) or
// gains by it: no kernel, initramfs or command line to load (its memory
// has them) and its own translation cache size. What the recipe's machine
// digest is taken from has none of the clone's choices.
func TestQEMUArgsClone(t *testing.T) {
	base := qemuSpec{name: "sb1", accel: AccelTCG, cpus: 1, memoryMiB: 256, qmpFD: 3, channelFD: 4, disk: "d",
		cmdline: "console=ttyS0", ram: "/proc/self/fd/8", scratch: []string{"s0", "s1", "s2", "s3"}}
	template, clone := base, base
	template.kernel, template.initrd, template.ramShared = "k", "i", true
	clone.incoming, clone.tbSizeMiB = true, 12
	flag := func(args []string, name string) string {
		if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
			return args[i+1]
		}
		return ""
	}
	for _, tc := range []struct {
		name                 string
		spec                 qemuSpec
		wantKernel, wantRAM  string
		wantAccel, wantStart string
	}{
		{"template", template, "k", "share=on", "tcg,tb-size=16", "-S"},
		{"clone", clone, "", "share=off", "tcg,tb-size=12", "-incoming"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := qemuArgs(tc.spec)
			joined := strings.Join(args, " ")
			if got := flag(args, "-kernel"); got != tc.wantKernel {
				t.Errorf("-kernel %q, want %q", got, tc.wantKernel)
			}
			if tc.wantKernel == "" && (slices.Contains(args, "-initrd") || slices.Contains(args, "-append")) {
				t.Errorf("a clone loads an initramfs or a command line: %s", joined)
			}
			if got := flag(args, "-accel"); got != tc.wantAccel {
				t.Errorf("-accel %q, want %q", got, tc.wantAccel)
			}
			if !strings.Contains(joined, "mem-path=/proc/self/fd/8,"+tc.wantRAM) || !slices.Contains(args, tc.wantStart) {
				t.Errorf("want %s and %s in %s", tc.wantRAM, tc.wantStart, joined)
			}
		})
	}
	// Everything else is the same machine.
	strip := func(args []string) []string {
		var out []string
		for i := 0; i < len(args); i++ {
			switch args[i] {
			case "-kernel", "-initrd", "-append", "-accel", "-incoming", "-object":
				i++
				continue
			case "-S":
				continue
			}
			out = append(out, args[i])
		}
		return out
	}
	if a, b := strip(qemuArgs(template)), strip(qemuArgs(clone)); !slices.Equal(a, b) {
		t.Errorf("a clone's machine differs from its template's:\n%v\n%v", a, b)
	}
	// The recipe's machine (recipeFor) is the template's, whatever a
	// clone's translation cache.
	recipe := qemuSpec{accel: AccelTCG, cpus: 1, memoryMiB: 256, ram: "RAM"}
	withTB := recipe
	withTB.tbSizeMiB = tcgTBSizeMiB
	if !slices.Equal(qemuArgs(recipe), qemuArgs(withTB)) {
		t.Error("the recipe's machine depends on the translation cache size")
	}
}
