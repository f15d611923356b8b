package kvm

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

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

// confinement is how one sandbox's QEMU runs. The launcher starts a jailer
// (jailer_linux.go: its own binary re-executed) in new PID, mount, network,
// IPC and UTS namespaces; the jailer mounts a minimal read-only root (QEMU,
// its libraries, modules and firmware; /dev/null, /dev/urandom, /dev/kvm
// when it is used; a /proc of the new PID namespace) and pivots into it,
// empties the capability bounding set, drops to the sandbox's uid and gid
// with no supplementary groups but kvm when it uses /dev/kvm (so with no
// capabilities), sets the parent-death signal and no_new_privs, and execs
// QEMU as PID 1 of its PID namespace. QEMU's seccomp filter (-sandbox)
// then denies exec, set*id and resource control. QEMU needs no host path:
// what it uses is handed to it as descriptors (kernel, initrd, disk, RAM,
// sockets), and the host's state, the TPM device and other sandboxes are
// neither in its root nor in its PID namespace, and closed to its uid.
type confinement struct {
	uid, gid uint32
	groups   []uint32
	accel    string
	hostNet  bool // QEMU keeps the host's network namespace (user-mode networking)
	lock     *os.File
	once     sync.Once
	persist  bool // QEMU outlives the launcher: no parent-death signal
	noTHP    bool // QEMU runs without transparent huge pages (jailSpec.NoTHP)

	smu     sync.Mutex
	sync    *os.File // our end of the socket to the jailer
	child   *os.File // the jailer's end, ours to close once it started
	waiting bool     // started owns sync: release leaves it alone
}

// confine picks a free sandbox uid for name (and holds its lock) and makes
// cmd (QEMU's command) start QEMU through the jailer, or says why QEMU
// cannot be confined. accel decides whether the kvm group and /dev/kvm are
// kept. persist leaves QEMU without a parent-death signal
// (Config.RunDir). noTHP disables transparent huge pages for QEMU
// (jailSpec.NoTHP). hostNet keeps QEMU in the host's network namespace, for user-mode
// networking: QEMU itself makes the guest's outbound connections and
// listens on its forwarded ports, which a namespace of its own would cut
// off from the host. The trade-off (docs/security.md): a QEMU compromised
// by its guest can reach the host's network as the sandbox uid.
func confine(name, accel string, hostNet, persist, noTHP bool, cmd *exec.Cmd) (*confinement, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("confining QEMU (a uid of its own, namespaces, its own root) needs root")
	}
	if err := os.MkdirAll(uidLockDir, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox uids: %w", err)
	}
	if err := os.MkdirAll(jailRoot, 0o700); err != nil {
		return nil, fmt.Errorf("QEMU's root: %w", err)
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
		c := &confinement{uid: uid, gid: uid, groups: groups, accel: accel, hostNet: hostNet, lock: f, persist: persist, noTHP: noTHP}
		if err := c.apply(cmd); err != nil {
			c.release()
			return nil, err
		}
		return c, nil
	}
	return nil, fmt.Errorf("all %d sandbox uids are in use", SandboxUIDCount)
}

// apply turns cmd, QEMU's command, into the jailer's: the launcher's binary
// re-executed in new namespaces, told (in argv) what to mount and which
// credentials to take, and given one more descriptor, a socket on which it
// reports a failure before QEMU runs (success: exec closes it).
func (c *confinement) apply(cmd *exec.Cmd) error {
	binds, err := jailFiles(cmd.Path)
	if err != nil {
		return fmt.Errorf("QEMU's root: %w", err)
	}
	devs := []string{"/dev/null", "/dev/urandom"}
	if c.accel == AccelKVM {
		devs = append(devs, "/dev/kvm")
	}
	for _, d := range devs {
		binds = append(binds, jailBind{Src: d, Dst: d, Dev: true})
	}
	if c.hostNet {
		// slirp's DNS proxy forwards to the host's resolvers.
		if st, err := os.Stat("/etc/resolv.conf"); err == nil && st.Mode().IsRegular() {
			binds = append(binds, jailBind{Src: "/etc/resolv.conf", Dst: "/etc/resolv.conf"})
		}
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("jailer socket: %w", err)
	}
	unix.SetNonblock(fds[0], true) // pollable: started reads it with a deadline
	c.sync, c.child = os.NewFile(uintptr(fds[0]), "jailer-sync"), os.NewFile(uintptr(fds[1]), "jailer-sync")
	// QEMU inherits the uid's lock (the same open file): the uid stays
	// taken for as long as QEMU runs, also after the launcher is gone.
	cmd.ExtraFiles = append(cmd.ExtraFiles, c.lock)
	spec := jailSpec{
		Root: jailRoot, Binds: binds, UID: c.uid, GID: c.gid, Groups: c.groups,
		SyncFD: 3 + len(cmd.ExtraFiles), Path: binds[0].Dst, Args: cmd.Args, Persist: c.persist,
		NoTHP: c.noTHP,
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, c.child)
	cmd.Path, cmd.Args = "/proc/self/exe", []string{jailerArg0, string(js)}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// The jailer sets the parent-death signal itself (Go's check of it
	// would kill a child in a new PID namespace), and drops to the uid.
	cmd.SysProcAttr.Pdeathsig = 0
	cmd.SysProcAttr.Credential = nil
	cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS
	if !c.hostNet {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNET
	}
	return nil
}

// jailerTimeout bounds the jailer's work (mounts and credentials: it takes
// milliseconds) in case something in it hangs.
const jailerTimeout = 30 * time.Second

// started waits until the jailer has exec'ed QEMU, and returns its error
// if it could not. Call it once the command started; nil does nothing.
func (c *confinement) started() error {
	if c == nil {
		return nil
	}
	c.smu.Lock()
	c.child.Close() // the jailer holds its own copy, closed by exec
	c.child, c.waiting = nil, true
	f := c.sync
	c.smu.Unlock()
	f.SetReadDeadline(time.Now().Add(jailerTimeout))
	msg, err := io.ReadAll(io.LimitReader(f, 4096))
	f.Close()
	if len(msg) > 0 {
		return fmt.Errorf("%s (its root holds only QEMU, its libraries and firmware); run QEMU unconfined only on purpose (launcher run --no-confine; kvm.Config.Unconfined)", sanitize(string(msg)))
	}
	if err != nil {
		return fmt.Errorf("waiting for the jailer: %w", err)
	}
	return nil
}

// release frees the uid once QEMU is gone. Safe to call more than once and
// on nil.
func (c *confinement) release() {
	if c == nil {
		return
	}
	c.once.Do(func() { c.lock.Close() })
	c.smu.Lock()
	defer c.smu.Unlock()
	if !c.waiting && c.sync != nil {
		c.sync.Close()
		c.child.Close()
		c.sync, c.child = nil, nil
	}
}

// String says what confinement is in force, for logs and 'launcher run -v'.
func (c *confinement) String() string {
	if c == nil {
		return "none (QEMU runs as the launcher's user)"
	}
	dev := "/dev/null and /dev/urandom"
	if c.accel == AccelKVM {
		dev = "/dev/null, /dev/urandom and /dev/kvm"
	}
	ns := "own mount/network/IPC/UTS namespaces"
	if c.hostNet {
		ns = "own mount/IPC/UTS namespaces, the host's network namespace (user-mode networking)"
	}
	return fmt.Sprintf("uid %d gid %d, no capabilities, no_new_privs, PID 1 of its own PID namespace, "+
		"%s, a read-only root of QEMU, its libraries and firmware, %s", c.uid, c.gid, ns, dev)
}
