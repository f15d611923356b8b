package kvm

import (
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The uids (and gids, the same numbers) reserved for sandboxes' QEMU
// processes: each running sandbox gets one of its own, so no QEMU can touch
// another's process (ptrace, /proc/PID/fd, /proc/PID/mem need the same uid)
// nor anything of the host's that is not world-accessible: the state
// directory (0700 root), the TPM device (root:tss 0660), the launch log.
// The range lies above systemd's container ranges; nothing else should use it.
const (
	SandboxUIDBase  = 3_200_000_000
	SandboxUIDCount = 65536
)

// uidLockDir holds one lock file per sandbox uid in use, held (flock) by the
// process that runs the sandbox for as long as it runs: a lock dies with its
// holder, so a crashed launcher frees its uid.
const uidLockDir = "/run/bulwark/sandbox-uids"

// confinement is how one sandbox's QEMU runs: as its own uid and gid, with no
// supplementary groups but kvm when it uses /dev/kvm (and so with no
// capabilities: a non-root uid has none), in network, IPC and UTS
// namespaces of its own (no network device, no shared memory with the
// host, its own hostname). QEMU's seccomp filter (-sandbox) adds
// no_new_privs and denies set*id, exec and resource control.
//
// No PID or mount namespace: Go's exec cannot combine a new PID namespace
// with the parent-death signal that ties QEMU to the launcher (the child
// sees parent pid 0 and kills itself), and a mount namespace that hides
// paths needs code between fork and exec. The uid does that work: what
// QEMU needs it is handed as descriptors (kernel, initrd, sockets), and
// the host paths that matter are closed to other users.
type confinement struct {
	uid, gid uint32
	groups   []uint32
	lock     *os.File
	once     sync.Once
}

// confine picks a free sandbox uid for name (and holds its lock), or says
// why QEMU cannot be confined. accel decides whether the kvm group is kept.
func confine(name, accel string) (*confinement, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("confining QEMU (a uid of its own, namespaces) needs root")
	}
	if err := os.MkdirAll(uidLockDir, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox uids: %w", err)
	}
	var groups []uint32
	if accel == AccelKVM {
		g, err := user.LookupGroup("kvm")
		if err != nil {
			return nil, fmt.Errorf("KVM needs the kvm group for /dev/kvm: %w", err)
		}
		gid, err := strconv.ParseUint(g.Gid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("kvm group id %q: %w", g.Gid, err)
		}
		groups = []uint32{uint32(gid)}
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	start := h.Sum32() % SandboxUIDCount
	for i := uint32(0); i < SandboxUIDCount; i++ {
		uid := SandboxUIDBase + (start+i)%SandboxUIDCount
		f, err := os.OpenFile(filepath.Join(uidLockDir, strconv.FormatUint(uint64(uid), 10)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("sandbox uids: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				continue // another running sandbox has it
			}
			return nil, fmt.Errorf("sandbox uids: %w", err)
		}
		return &confinement{uid: uid, gid: uid, groups: groups, lock: f}, nil
	}
	return nil, fmt.Errorf("all %d sandbox uids are in use", SandboxUIDCount)
}

// apply sets the child's credentials and namespaces.
func (c *confinement) apply(attr *syscall.SysProcAttr) {
	if c == nil {
		return
	}
	attr.Credential = &syscall.Credential{Uid: c.uid, Gid: c.gid, Groups: c.groups}
	attr.Cloneflags |= syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS
}

// release frees the uid once QEMU is gone. Safe to call more than once and
// on nil.
func (c *confinement) release() {
	if c == nil {
		return
	}
	c.once.Do(func() { c.lock.Close() })
}

// String says what confinement is in force, for logs and 'launcher run -v'.
func (c *confinement) String() string {
	if c == nil {
		return "none (QEMU runs as the launcher's user)"
	}
	return fmt.Sprintf("uid %d gid %d, no capabilities, own network/IPC/UTS namespaces", c.uid, c.gid)
}
