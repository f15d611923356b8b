package kvm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The jailer is the step between the launcher and a confined QEMU. The
// launcher re-executes its own binary (/proc/self/exe, whatever binary links
// this package: the launcher, a host service, a test binary) with argv[0]
// jailerArg0, in new PID, mount, network, IPC and UTS namespaces. The init
// function below sees the marker before main runs, builds QEMU's root,
// drops to the sandbox's credentials, ties itself to the launcher with
// PR_SET_PDEATHSIG and execs QEMU, which so becomes PID 1 of its own PID
// namespace with the jailer's host pid (the launcher's Cmd.Process).
//
// Go's exec cannot do this itself: a child in a new PID namespace sees its
// parent as pid 0, so Go's parent-death check kills it, and a credential
// change clears the parent-death signal, so it must be set after the uid
// is dropped: here, on the thread that then execs QEMU.
const jailerArg0 = "bulwark-jailer"

// jailRoot is the empty directory each jailer mounts its QEMU's root
// (a tmpfs) on, in its own mount namespace: the host never sees the mount.
const jailRoot = "/run/bulwark/jail"

// jailSpec is what the launcher tells the jailer (as JSON in argv[1]).
type jailSpec struct {
	Root   string     `json:"root"`  // an empty directory to mount the new root on
	Binds  []jailBind `json:"binds"` // read-only, at the same path in the new root
	UID    uint32     `json:"uid"`
	GID    uint32     `json:"gid"`
	Groups []uint32   `json:"groups"`
	SyncFD int        `json:"sync_fd"` // the launcher's end: errors go there; EOF means it died
	Path   string     `json:"path"`    // QEMU, as a path inside the new root
	Args   []string   `json:"args"`    // QEMU's argv
	// Persist: QEMU outlives the launcher (Config.RunDir); no
	// parent-death signal.
	Persist bool `json:"persist,omitempty"`
	// NoTHP disables transparent huge pages for QEMU (prctl
	// PR_SET_THP_DISABLE, kept across exec): for TCG clones, where an
	// anonymous region QEMU marks MADV_HUGEPAGE would otherwise be
	// resident in whole 2 MiB pages however little of it is touched.
	NoTHP bool `json:"no_thp,omitempty"`
}

// jailBind is one host file or directory visible (read-only) to QEMU.
type jailBind struct {
	Src  string `json:"src"`
	Dst  string `json:"dst"`
	Dir  bool   `json:"dir,omitempty"`
	Dev  bool   `json:"dev,omitempty"`  // a device node: nodev is not set
	Exec bool   `json:"exec,omitempty"` // the binary, its libraries and modules: noexec is not set
}

func init() {
	if len(os.Args) == 2 && os.Args[0] == jailerArg0 {
		runJailer(os.Args[1]) // does not return
	}
}

// runJailer sets QEMU's confinement up and execs it; on failure it reports
// on the sync descriptor and exits.
func runJailer(arg string) {
	// The main goroutine runs init on the main thread; keep it there: the
	// credentials and the parent-death signal set below are this thread's,
	// and this thread execs QEMU.
	runtime.LockOSThread()
	var spec jailSpec
	if err := json.Unmarshal([]byte(arg), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "bulwark-jailer: not for manual use:", err)
		os.Exit(2)
	}
	step, err := jail(&spec)
	if err == nil {
		step, err = "exec "+spec.Path, unix.Exec(spec.Path, spec.Args, os.Environ())
	}
	if err != errLauncherGone {
		unix.Write(spec.SyncFD, []byte(step+": "+err.Error()))
	}
	os.Exit(1)
}

var errLauncherGone = errors.New("the launcher is gone")

// jail does everything but the exec; it returns the failed step.
func jail(spec *jailSpec) (string, error) {
	if _, err := unix.FcntlInt(uintptr(spec.SyncFD), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return "sync descriptor", err
	}
	if step, err := jailMounts(spec); err != nil {
		return step, err
	}
	// Capabilities: none bounded, none ambient; setresuid away from 0
	// clears the permitted and effective sets.
	for c := 0; c <= 63; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return "dropping capabilities", err
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return "dropping ambient capabilities", err
	}
	// This thread only (raw syscalls, not Go's all-threads Setuid): it is
	// the one that execs, and exec makes its credentials the process's.
	groups := spec.Groups
	var gp *uint32
	if len(groups) > 0 {
		gp = &groups[0]
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(unsafe.Pointer(gp)), 0); e != 0 {
		return "setgroups", e
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(spec.GID), uintptr(spec.GID), uintptr(spec.GID)); e != 0 {
		return "setresgid", e
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(spec.UID), uintptr(spec.UID), uintptr(spec.UID)); e != 0 {
		return "setresuid", e
	}
	// After the credential change, which clears it.
	if !spec.Persist {
		if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
			return "parent-death signal", err
		}
	}
	// The launcher may have died before the line above: then its end of
	// the sync socket is closed (a live one has written nothing yet).
	var b [1]byte
	if n, _, err := unix.Recvfrom(spec.SyncFD, b[:], unix.MSG_DONTWAIT); err == nil && n == 0 {
		return "", errLauncherGone
	} else if err != nil && err != unix.EAGAIN {
		return "sync descriptor", err
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return "no_new_privs", err
	}
	if spec.NoTHP {
		if err := unix.Prctl(unix.PR_SET_THP_DISABLE, 1, 0, 0, 0); err != nil {
			return "disabling transparent huge pages", err
		}
	}
	return "", nil
}

// jailMounts builds the new root: a tmpfs on spec.Root with the binds, a
// procfs of the new PID namespace (PIDs only), pivoted into and read-only.
func jailMounts(spec *jailSpec) (string, error) {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return "making the mounts private", err
	}
	root := spec.Root
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=64k,nr_inodes=512"); err != nil {
		return "mounting the root tmpfs", err
	}
	for _, b := range spec.Binds {
		dst := filepath.Join(root, b.Dst)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "bind " + b.Dst, err
		}
		if b.Dir {
			if err := os.Mkdir(dst, 0o755); err != nil {
				return "bind " + b.Dst, err
			}
		} else if err := os.WriteFile(dst, nil, 0o444); err != nil {
			return "bind " + b.Dst, err
		}
		if err := unix.Mount(b.Src, dst, "", unix.MS_BIND, ""); err != nil {
			return "bind " + b.Src, err
		}
		flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY | unix.MS_NOSUID)
		if !b.Dev {
			flags |= unix.MS_NODEV
		}
		if !b.Exec {
			flags |= unix.MS_NOEXEC
		}
		if err := unix.Mount("", dst, "", flags, ""); err != nil {
			return "read-only " + b.Dst, err
		}
	}
	proc := filepath.Join(root, "proc")
	if err := os.Mkdir(proc, 0o555); err != nil {
		return "/proc", err
	}
	// QEMU opens /proc/self/fd/N; it needs nothing of /proc but its own
	// process (subset=pid), and only its own processes are in this PID
	// namespace.
	// (subset=pid is Linux 5.8 and later.)
	err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "subset=pid")
	if err == unix.EINVAL {
		err = unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	}
	if err != nil {
		return "mounting /proc", err
	}
	if err := unix.Chdir(root); err != nil {
		return "chdir to the new root", err
	}
	// The old root ends up on top of the new one and is detached.
	if err := unix.PivotRoot(".", "."); err != nil {
		return "pivot_root", err
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return "detaching the old root", err
	}
	if err := unix.Chdir("/"); err != nil {
		return "chdir /", err
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return "read-only root", err
	}
	return "", nil
}

// jailFiles lists what QEMU needs of the host, for one QEMU binary: the
// binary itself, its shared libraries, its accelerator modules (and theirs)
// and its data directory (firmware: the microvm machine loads
// bios-microvm.bin). Computed once per binary (path, size and time).
func jailFiles(qemu string) ([]jailBind, error) {
	real, err := filepath.EvalSymlinks(qemu)
	if err != nil {
		return nil, err
	}
	if real, err = filepath.Abs(real); err != nil {
		return nil, err
	}
	fi, err := os.Stat(real)
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("%s\x00%d\x00%d", real, fi.Size(), fi.ModTime().UnixNano())
	jailCache.Lock()
	defer jailCache.Unlock()
	if b, ok := jailCache.m[key]; ok {
		return b, nil
	}
	binds := []jailBind{{Src: real, Dst: real, Exec: true}}
	seen := map[string]bool{real: true}
	add := func(b jailBind) {
		if !seen[b.Dst] {
			seen[b.Dst] = true
			binds = append(binds, b)
		}
	}
	elfs := []string{real}
	// QEMU looks for its modules and data relative to its binary
	// (/usr/bin/../lib/x86_64-linux-gnu/qemu, /usr/bin/../share/qemu).
	prefix := filepath.Dir(filepath.Dir(real))
	mods, _ := filepath.Glob(filepath.Join(prefix, "lib", "*", "qemu"))
	mods = append(mods, filepath.Join(prefix, "lib", "qemu"))
	for _, d := range mods {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			add(jailBind{Src: d, Dst: d, Dir: true, Exec: true})
			accel, _ := filepath.Glob(filepath.Join(d, "accel-*.so"))
			elfs = append(elfs, accel...)
		}
	}
	if d := filepath.Join(prefix, "share", "qemu"); isDir(d) {
		add(jailBind{Src: d, Dst: d, Dir: true})
	}
	for _, e := range elfs {
		libs, err := sharedLibraries(e)
		if err != nil {
			return nil, err
		}
		for _, l := range libs {
			src, err := filepath.EvalSymlinks(l)
			if err != nil {
				return nil, fmt.Errorf("%s needs %s: %w", e, l, err)
			}
			add(jailBind{Src: src, Dst: l, Exec: true})
		}
	}
	if jailCache.m == nil {
		jailCache.m = map[string][]jailBind{}
	}
	jailCache.m[key] = binds
	return binds, nil
}

var jailCache struct {
	sync.Mutex
	m map[string][]jailBind
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// sharedLibraries lists the libraries an ELF file loads (its interpreter
// included), as paths the dynamic loader opens, from ldd.
func sharedLibraries(elf string) ([]string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command("ldd", elf)
	cmd.Stderr = &stderr
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(string(out)+stderr.String(), "not a dynamic executable") {
			return nil, nil // static
		}
		return nil, fmt.Errorf("listing the libraries of %s (ldd): %w: %s", elf, err, strings.TrimSpace(stderr.String()))
	}
	return parseLdd(out)
}

// parseLdd reads ldd's output: "name => /path (0x...)", "/path (0x...)",
// "name (0x...)" (the vDSO, no file), "name => not found".
func parseLdd(out []byte) ([]string, error) {
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l == "statically linked" {
			continue
		}
		if name, rest, ok := strings.Cut(l, " => "); ok {
			if strings.HasPrefix(rest, "not found") {
				return nil, fmt.Errorf("library %s not found", name)
			}
			l = rest
		}
		p, _, _ := strings.Cut(l, " (")
		if filepath.IsAbs(p) {
			libs = append(libs, filepath.Clean(p))
		}
	}
	return libs, nil
}
