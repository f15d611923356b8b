package kvm

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
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
	// Console receives the guest serial console (kernel log, agent log).
	Console io.Writer
	// Logger gets the sandbox's own log lines (default: discarded).
	Logger *slog.Logger
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
	// Template, when set, starts the sandbox as a clone of it
	// (LoadTemplate): the rest of the config must give the template's
	// recipe, and Image is the clone's own image disk.
	Template *Template
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
		rand.Read(b[:])
		cfg.Name = hex.EncodeToString(b[:])
	}
	if !validName(cfg.Name) {
		return fmt.Errorf("kvm: sandbox name %q: want [A-Za-z0-9._-], at most 64", cfg.Name)
	}
	return nil
}

func validName(n string) bool {
	if len(n) > 64 {
		return false
	}
	return (&channel.Start{SandboxID: n}).Validate() == nil
}
