package kvm

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// The sandbox sizes Start accepts.
const (
	MinCPUs, MaxCPUs           = 1, 64
	MinMemoryMiB, MaxMemoryMiB = 128, 1 << 20
)

// Config describes one sandbox. Kernel and Initrd are given either as open
// files (e.g. sealed memfds from measure.Pin: QEMU reads exactly the bytes
// that were measured, through /proc/self/fd/N) or as paths.
type Config struct {
	// Kernel is the guest kernel: a PVH ELF vmlinux (see DefaultKernel) or
	// a bzImage. Exactly one of Kernel and KernelPath is required.
	Kernel     *os.File
	KernelPath string
	// Initrd is the base initramfs (BuildBaseInitramfs). One of Initrd and
	// InitrdPath is required.
	Initrd     *os.File
	InitrdPath string
	// Image is the workload image's disk (ImageDisk.File: a sealed memfd),
	// given to QEMU as a read-only virtio-blk disk; nil leaves the disk slot
	// on an empty placeholder and runs no image (the agent refuses START).
	Image *os.File
	// Cmdline is the guest kernel command line. It is measured, so callers
	// that record it should compute it first: DefaultCmdline(accel) with
	// accel from ChooseAccel. "" means DefaultCmdline of the chosen accel.
	Cmdline string
	// CPUs (default 1; MinCPUs..MaxCPUs) and MemoryMiB (default 512;
	// MinMemoryMiB..MaxMemoryMiB).
	CPUs      int
	MemoryMiB int
	// Accel is "auto" (default), "kvm" or "tcg"; see ChooseAccel.
	Accel string
	// BootTimeout bounds the time from start to the agent's HELLO
	// (default 60s). A hung boot ends with ErrBootTimeout and the console tail.
	BootTimeout time.Duration
	// Stdout and Stderr receive the workload's output (default: discarded).
	Stdout, Stderr io.Writer
	// ContainerOutput, for Reattach of a pod, says where the output of
	// its container index goes from now on (nil writers: discarded). It
	// is asked for each container the agent reports, before any of its
	// frames is read. Unused by Start: StartContainer is given them.
	ContainerOutput func(index int) (stdout, stderr io.Writer)
	// Console receives the guest serial console (kernel log, agent log).
	Console io.Writer
	// Logger gets the sandbox's own log lines (default: discarded).
	Logger *slog.Logger
	// Rand is where the guest's fresh entropy (IDENTITY), a generated
	// Name and the reattach nonce come from (default: crypto/rand). Now
	// is the wall clock the guest is given and a template records
	// (default: time.Now). Timeouts and elapsed times always use the real
	// clock.
	Rand io.Reader
	Now  func() time.Time
	// QEMU is the qemu-system-x86_64 binary (default: found in PATH).
	QEMU string
	// CgroupParent says where the sandbox's cgroup is made: "" (the
	// default) picks cgroup v2 (DefaultCgroupParent) or v1 (the cpu,
	// memory and pids hierarchies) from the host; a path is a v2 parent;
	// "none" runs without CPU, memory and pids limits. Start fails when the
	// limits cannot be enforced, unless it is "none".
	CgroupParent string
	// Unconfined runs QEMU as the calling user, without a uid of its own and
	// without namespaces. By default QEMU is confined (see SandboxUIDBase)
	// and Start fails where it cannot be (not root); set this only on purpose.
	Unconfined bool
	// RunDir, when set, makes the sandbox persistent: it outlives the
	// process that started it. QEMU then gets no parent-death signal, and
	// its QMP and guest channel sockets stay at RunDir/q.sock and
	// RunDir/c.sock, so that another process can take the sandbox over
	// (Reattach). The directory must exist, be private (0700) and have a
	// short path (socket paths are at most 107 bytes).
	RunDir string
	// Name labels the sandbox in logs and its cgroup (default: random).
	Name string
	// KernelDigest and InitrdDigest are the measured digests of Kernel and
	// Initrd. Templates and clones need them: they are part of the recipe.
	KernelDigest, InitrdDigest string
	// Env ("KEY=VALUE" entries set over the image's environment),
	// WorkingDir and User (replacing the image's when not empty) go to the
	// agent in START: docker run's -e, -w and --user (channel.Start).
	Env        []string
	WorkingDir string
	User       string
	// Network is "" (no network device, the default) or NetworkUser: a
	// virtio-net device on QEMU's user-mode network (slirp), guest address
	// channel.GuestAddr, with Ports forwarded from the host. QEMU then
	// keeps the host's network namespace (it makes the guest's outbound
	// connections and listens on the forwarded ports), confined otherwise.
	// A clone has one only when its template was made with TemplateNet,
	// and a sandbox without one is never a clone of such a template (the
	// recipes differ): a guest that asked for no network gets no device.
	//
	// NetworkTap joins the guest to a pod's network namespace instead:
	// NetNS names it (a /proc/PID/ns/net or /run/netns/NAME path, see
	// CheckNetNS). Start creates a tap in that namespace, redirects
	// traffic both ways between it and the namespace's interface (tc
	// mirred, as Kata does), gives the guest that interface's MAC, IPv4
	// address and gateway, and hands QEMU the tap as a descriptor: QEMU
	// stays in a network namespace of its own, with no network access
	// but its tap.
	Network string
	Ports   []PortForward
	NetNS   string
	// Volumes are read-only disks (BuildVolumeDisk: sealed memfds of erofs
	// images) mounted at their Target in the workload's root; Tmpfs are
	// writable scratch mounts. At most MaxVolumes of each. A clone cannot
	// have volumes: its template's machine has no slot for them.
	Volumes []VolumeDisk
	Tmpfs   []TmpfsMount
	// Scratch are writable scratch disks (CreateScratchDisk), at most
	// MaxScratch, mounted at their Target (ext4, nodev, nosuid). A clone
	// has them too: its template's machine has MaxScratch scratch slots.
	Scratch []ScratchDisk
	// Stdin, when set, is the workload's stdin (docker run -i): read
	// until EOF (or the sandbox ends) and sent to the agent in STDIN
	// frames once the workload runs. Nil: the workload's stdin is
	// /dev/null.
	Stdin io.Reader
	// TTY, when set, gives the workload a terminal of this initial size
	// (docker run -t): its stdin, stdout and stderr are a pseudo-terminal
	// in the guest, what it writes arrives on Stdout (Stderr gets
	// nothing: a terminal merges them), Stdin (if any) is typed into it,
	// and Sandbox.Resize changes its size.
	TTY *WindowSize
	// Template, when set, starts the sandbox as a clone of it
	// (LoadTemplate): the rest of the config must give the template's
	// recipe, and Image is the clone's own image disk.
	Template *Template
	// TemplateNet, for CreateTemplate only, gives the template's machine a
	// network device, on a backend that reaches nothing while the
	// template is made (its guest never loads the driver): launches with
	// a Network, user or tap, are clones of it, each giving the device
	// its own backend (Recipe.Net).
	TemplateNet bool
	// Pod makes the sandbox a pod (pod.go): its agent runs no workload at
	// START, and the host adds containers, the first from Image, the
	// others from the image slots the VM boots with (Sandbox.PodSlots,
	// at most MaxPodSlots). A pod is a clone only of a template made
	// with Pod set (its recipe's PodSlots): the slots' devices are part
	// of the template's machine, each clone's slots its own memfds.
	Pod bool
}

// setDefaults fills in the zero fields and checks the rest.
func (cfg *Config) setDefaults() error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stdout == nil {
		cfg.Stdout = io.Discard
	}
	if cfg.Stderr == nil {
		cfg.Stderr = io.Discard
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 1
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 512
	}
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 60 * time.Second
	}
	if cfg.CPUs < MinCPUs || cfg.CPUs > MaxCPUs {
		return fmt.Errorf("kvm: CPUs = %d, want %d..%d", cfg.CPUs, MinCPUs, MaxCPUs)
	}
	if cfg.MemoryMiB < MinMemoryMiB || cfg.MemoryMiB > MaxMemoryMiB {
		return fmt.Errorf("kvm: MemoryMiB = %d, want %d..%d", cfg.MemoryMiB, MinMemoryMiB, MaxMemoryMiB)
	}
	if (cfg.Kernel == nil) == (cfg.KernelPath == "") {
		return errors.New("kvm: give exactly one of Kernel and KernelPath (see kvm.DefaultKernel)")
	}
	if (cfg.Initrd == nil) == (cfg.InitrdPath == "") {
		return errors.New("kvm: give exactly one of Initrd and InitrdPath (see kvm.BuildBaseInitramfs)")
	}
	if cfg.Name == "" {
		var b [6]byte
		if _, err := io.ReadFull(cfg.random(), b[:]); err != nil {
			return fmt.Errorf("kvm: a sandbox name: %w", err)
		}
		cfg.Name = hex.EncodeToString(b[:])
	}
	if !validName(cfg.Name) {
		return fmt.Errorf("kvm: sandbox name %q: want [A-Za-z0-9._-], at most 64", cfg.Name)
	}
	if err := cfg.checkNetwork(); err != nil {
		return err
	}
	if err := cfg.checkVolumes(); err != nil {
		return err
	}
	st := channel.Start{SandboxID: cfg.Name, Env: cfg.Env, WorkingDir: cfg.WorkingDir, User: cfg.User, Network: cfg.Network, Mounts: cfg.mounts(), TTY: cfg.TTY}
	if cfg.Network == NetworkTap {
		st.Address = "192.0.2.1/24" // the pod's, read at Start; checked there
	}
	if err := st.Validate(); err != nil {
		return fmt.Errorf("kvm: %w", err)
	}
	return nil
}

// NetworkUser is Config.Network for QEMU user-mode networking;
// NetworkTap for a tap in a pod's network namespace (Config.NetNS).
const (
	NetworkUser = channel.NetworkUser
	NetworkTap  = channel.NetworkTap
)

// PortForward forwards TCP connections to HostIP:HostPort on the host to
// GuestPort in the guest (QEMU's hostfwd). HostPort 0 is any free port,
// chosen when QEMU listens (Sandbox.Ports says which).
type PortForward struct {
	HostIP    netip.Addr // IPv4
	HostPort  uint16     // 0..65535
	GuestPort uint16     // 1..65535
}

// MaxPorts bounds Config.Ports.
const MaxPorts = 32

// VolumeDisk is a read-only volume: an erofs disk (BuildVolumeDisk) and
// where the workload sees it.
type VolumeDisk struct {
	File   *os.File
	Target string
}

// TmpfsMount is writable scratch of Size bytes (0: the kernel's default,
// half the guest's memory) at Target in the workload's root.
type TmpfsMount struct {
	Target string
	Size   int64
}

// MaxVolumes bounds Config.Volumes and Config.Tmpfs, each.
const MaxVolumes = 8

// volumeSerial is the virtio-blk serial of volume i, by which the agent
// finds its disk.
func volumeSerial(i int) string { return "bulwark-vol" + strconv.Itoa(i) }

// mounts is START's Mounts for cfg's volumes and tmpfs.
func (cfg *Config) mounts() []channel.Mount {
	var ms []channel.Mount
	for i, v := range cfg.Volumes {
		ms = append(ms, channel.Mount{Type: channel.MountDisk, Serial: volumeSerial(i), Target: v.Target})
	}
	for _, t := range cfg.Tmpfs {
		ms = append(ms, channel.Mount{Type: channel.MountTmpfs, Target: t.Target, Size: t.Size})
	}
	for i, d := range cfg.Scratch {
		ms = append(ms, channel.Mount{Type: channel.MountScratch, Serial: scratchSerial(i), Target: d.Target, Size: d.Size})
	}
	return ms
}

// checkVolumes checks Volumes, Tmpfs and Scratch.
func (cfg *Config) checkVolumes() error {
	if len(cfg.Scratch) > MaxScratch {
		return fmt.Errorf("kvm: %d scratch disks, the limit is %d", len(cfg.Scratch), MaxScratch)
	}
	for i, d := range cfg.Scratch {
		if d.File == nil {
			return fmt.Errorf("kvm: scratch disk %d (%s) has no file", i, d.Target)
		}
		if d.Size < MinScratchBytes || d.Size > MaxScratchBytes {
			return fmt.Errorf("kvm: scratch disk %d (%s) of %d bytes: want %d..%d", i, d.Target, d.Size, MinScratchBytes, int64(MaxScratchBytes))
		}
	}
	if len(cfg.Volumes) == 0 && len(cfg.Tmpfs) == 0 {
		return nil
	}
	if len(cfg.Volumes) > MaxVolumes || len(cfg.Tmpfs) > MaxVolumes {
		return fmt.Errorf("kvm: %d volumes and %d tmpfs mounts, the limit is %d of each", len(cfg.Volumes), len(cfg.Tmpfs), MaxVolumes)
	}
	if cfg.Template != nil && len(cfg.Volumes) > 0 {
		return errors.New("kvm: a clone cannot have volumes: its template's machine has no disk slot for them (boot cold)")
	}
	for i, v := range cfg.Volumes {
		if v.File == nil {
			return fmt.Errorf("kvm: volume %d (%s) has no disk", i, v.Target)
		}
	}
	return nil
}

// checkNetwork checks Network and Ports.
func (cfg *Config) checkNetwork() error {
	if cfg.Network != NetworkTap && cfg.NetNS != "" {
		return errors.New("kvm: a network namespace (NetNS) needs Network = NetworkTap")
	}
	if cfg.TemplateNet && cfg.Network != "" {
		return errors.New("kvm: TemplateNet is a template's network device, on no network: a template is made without a Network")
	}
	switch cfg.Network {
	case "":
		if len(cfg.Ports) > 0 {
			return errors.New("kvm: port forwards need Network = NetworkUser")
		}
		return nil
	case NetworkUser, NetworkTap:
	default:
		return fmt.Errorf("kvm: network %q: want \"\" (none), %q or %q", cfg.Network, NetworkUser, NetworkTap)
	}
	if cfg.Network == NetworkTap {
		if len(cfg.Ports) > 0 {
			return errors.New("kvm: port forwards need Network = NetworkUser (a tap's guest is reached at its own address)")
		}
		if err := CheckNetNS(cfg.NetNS); err != nil {
			return fmt.Errorf("kvm: %w", err)
		}
		return nil
	}
	if len(cfg.Ports) > MaxPorts {
		return fmt.Errorf("kvm: %d port forwards, the limit is %d", len(cfg.Ports), MaxPorts)
	}
	seen := map[string]bool{}
	for _, p := range cfg.Ports {
		if !p.HostIP.Is4() || p.GuestPort == 0 {
			return fmt.Errorf("kvm: port forward %v: want an IPv4 host address and a guest port 1..65535", p)
		}
		k := netip.AddrPortFrom(p.HostIP, p.HostPort).String()
		if p.HostPort != 0 && seen[k] {
			return fmt.Errorf("kvm: host address %s forwarded twice", k)
		}
		seen[k] = true
	}
	return nil
}

func validName(n string) bool {
	if len(n) > 64 {
		return false
	}
	return (&channel.Start{SandboxID: n}).Validate() == nil
}

// random is cfg.Rand, or crypto/rand.
func (cfg *Config) random() io.Reader {
	if cfg.Rand != nil {
		return cfg.Rand
	}
	return rand.Reader
}

// now is cfg.Now(), or the real time.
func (cfg *Config) now() time.Time {
	if cfg.Now != nil {
		return cfg.Now()
	}
	return time.Now()
}
