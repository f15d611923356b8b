package kvm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// procStatus returns the named fields of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// asQEMU runs a command with a running QEMU's credentials (uid, gid, no
// supplementary groups, so no capabilities) and returns its output and error.
func asQEMU(t *testing.T, pid int, name string, args ...string) (string, error) {
	t.Helper()
	st := procStatus(t, pid)
	uid, _ := strconv.Atoi(strings.Fields(st["Uid"])[0])
	gid, _ := strconv.Atoi(strings.Fields(st["Gid"])[0])
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestSandboxConfinement: each sandbox's QEMU runs as a uid of its own from
// the reserved range, with no capabilities (none bounded either),
// no_new_privs, as PID 1 of a PID namespace of its own, and in mount,
// network, IPC and UTS namespaces of its own; with its credentials a
// root-only directory (as the state directory and launch log are), a
// TPM-like device node of root:tss 0660, and the other sandbox's /proc
// entries cannot be opened. Then, from inside QEMU's own namespaces with its
// credentials (nsenter), a probe sees (jailProbe): not root, no
// capabilities, a low pid and no host process, a read-only root with
// nothing of the host's state, TPM or other sandboxes in it, and no host
// socket (path or abstract) it can reach.
func TestSandboxConfinement(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("confinement needs root")
	}
	e := bootEnv(t)
	img := testImage(t, v1.Config{Cmd: []string{"/bin/true"}})
	ctx := context.Background()
	a, _, _, _ := startSandbox(t, ctx, e, img, nil)
	b, _, _, _ := startSandbox(t, ctx, e, img, nil)
	for _, sb := range []*Sandbox{a, b} {
		st := procStatus(t, sb.PID())
		uids := strings.Fields(st["Uid"])
		uid, _ := strconv.Atoi(uids[0])
		if uid < SandboxUIDBase || uid >= SandboxUIDBase+SandboxUIDCount || len(uids) != 4 || uids[1] != uids[0] || uids[2] != uids[0] || uids[3] != uids[0] {
			t.Errorf("QEMU uids (real, effective, saved, fs) %v, want one uid of the sandbox range", uids)
		}
		if gids := strings.Fields(st["Gid"]); gids[0] != uids[0] {
			t.Errorf("QEMU gid %v, want %s", gids, uids[0])
		}
		for _, c := range []string{"CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"} {
			if st[c] != "0000000000000000" {
				t.Errorf("QEMU %s = %s, want none", c, st[c])
			}
		}
		if st["NoNewPrivs"] != "1" {
			t.Errorf("QEMU NoNewPrivs = %q", st["NoNewPrivs"])
		}
		if st["Groups"] != "" {
			t.Errorf("QEMU supplementary groups %q under TCG, want none", st["Groups"])
		}
		if nspid := strings.Fields(st["NSpid"]); len(nspid) != 2 || nspid[1] != "1" {
			t.Errorf("QEMU NSpid %v, want PID 1 of a PID namespace of its own", nspid)
		}
		for _, ns := range []string{"pid", "mnt", "net", "ipc", "uts"} {
			mine, _ := os.Readlink("/proc/self/ns/" + ns)
			its, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", sb.PID(), ns))
			if err != nil || its == mine {
				t.Errorf("QEMU %s namespace %q (%v) is the launcher's %q", ns, its, err, mine)
			}
		}
	}
	if procStatus(t, a.PID())["Uid"] == procStatus(t, b.PID())["Uid"] {
		t.Error("two sandboxes share a uid")
	}

	// With QEMU a's credentials: the host's private state is closed.
	state := filepath.Join(t.TempDir(), "state")
	os.MkdirAll(state, 0o700)
	os.WriteFile(filepath.Join(state, "launch.cel"), []byte("log"), 0o644)
	if out, err := asQEMU(t, a.PID(), "cat", filepath.Join(state, "launch.cel")); err == nil {
		t.Errorf("QEMU's uid read the launch log in a 0700 root directory: %s", out)
	}
	tss := filepath.Join(t.TempDir(), "tpmrm0")
	if err := syscall.Mknod(tss, syscall.S_IFCHR|0o660, int(unix.Mkdev(10, 224))); err != nil {
		t.Errorf("mknod: %v", err)
	} else {
		os.Chmod(filepath.Dir(tss), 0o755)
		if out, err := asQEMU(t, a.PID(), "dd", "if="+tss, "of=/dev/null", "count=0"); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("QEMU's uid opened a root 0660 TPM device node: %v %s", err, out)
		}
	}
	// Another sandbox: its descriptors (QMP and channel sockets, memfds) and
	// its environment are closed to this one.
	if out, err := asQEMU(t, a.PID(), "ls", fmt.Sprintf("/proc/%d/fd", b.PID())); err == nil {
		t.Errorf("QEMU a listed QEMU b's descriptors: %s", out)
	}
	if out, err := asQEMU(t, a.PID(), "cat", fmt.Sprintf("/proc/%d/environ", b.PID())); err == nil {
		t.Errorf("QEMU a read QEMU b's environment: %q", out)
	}

	// From inside QEMU a's namespaces, with its credentials.
	dir := t.TempDir()
	hostSock, abstract := filepath.Join(dir, "host.sock"), "@bulwark-test-"+filepath.Base(dir)
	for _, addr := range []string{hostSock, abstract} {
		l, err := net.Listen("unix", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
	}
	t.Setenv("BULWARK_PROBE_ABSENT", strings.Join([]string{os.Getenv("BULWARK_STATE"), state, tss, hostSock,
		"/var/lib/bulwark", "/run/bulwark", "/dev/tpm0", "/dev/tpmrm0", fmt.Sprintf("/proc/%d", b.PID()),
		"/etc", "/home", "/root", "/tmp", "/sys"}, ":"))
	t.Setenv("BULWARK_PROBE_SOCKETS", hostSock+":"+abstract)
	out, err := inQEMU(t, a.PID())
	if err != nil || !strings.Contains(out, "PROBE-DONE") {
		t.Errorf("probe inside QEMU a's confinement: %v\n%s", err, out)
	}
	t.Logf("probe:\n%s", out)
}

// inQEMU runs this test binary's TestHelperJailProbe inside a running
// QEMU's PID, mount, network, IPC and UTS namespaces, with its uid and gid
// and no groups (nsenter; the binary is handed as a descriptor: its path is
// not in QEMU's root, but libc, all a Go test binary links, is).
func inQEMU(t *testing.T, pid int) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("nsenter not installed: apt-get install util-linux")
	}
	self, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	st := procStatus(t, pid)
	uid, gid := strings.Fields(st["Uid"])[0], strings.Fields(st["Gid"])[0]
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-p", "-m", "-n", "-i", "-u", "-S", uid, "-G", gid,
		"/proc/self/fd/3", "-test.run=^TestHelperJailProbe$", "-test.v")
	cmd.ExtraFiles = []*os.File{self}
	cmd.Env = append(os.Environ(), "BULWARK_PROBE=1")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestHelperJailProbe runs inside a QEMU's confinement (see inQEMU) and
// checks what it can see and reach; it does nothing in a normal test run.
func TestHelperJailProbe(t *testing.T) {
	if os.Getenv("BULWARK_PROBE") == "" {
		t.Skip("run inside a QEMU's confinement by TestSandboxConfinement")
	}
	if os.Getuid() == 0 || os.Geteuid() == 0 || os.Getgid() == 0 {
		t.Errorf("uid %d euid %d gid %d: root", os.Getuid(), os.Geteuid(), os.Getgid())
	}
	if g, _ := os.Getgroups(); len(g) != 0 {
		t.Errorf("supplementary groups %v", g)
	}
	st := procStatus(t, os.Getpid())
	for _, c := range []string{"CapPrm", "CapEff", "CapAmb"} {
		if st[c] != "0000000000000000" {
			t.Errorf("%s = %s", c, st[c])
		}
	}
	// Its own PID namespace: QEMU is PID 1, this probe the only other.
	if os.Getpid() > 16 {
		t.Errorf("pid %d: not a PID namespace of its own", os.Getpid())
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var others []string
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n != 1 && n != os.Getpid() {
			others = append(others, e.Name())
		}
	}
	if len(others) > 0 {
		t.Errorf("%d processes other than QEMU's own are visible in /proc: %v", len(others), others[:min(len(others), 5)])
	}
	if exe, err := os.Readlink("/proc/1/exe"); err != nil || !strings.Contains(exe, "qemu-system") {
		t.Errorf("PID 1 is %q (%v), want QEMU", exe, err)
	}
	// Its root: only QEMU, its libraries and data, three device nodes at
	// most, /proc; read-only.
	devs, _ := os.ReadDir("/dev")
	for _, d := range devs {
		if n := d.Name(); n != "null" && n != "urandom" && n != "kvm" {
			t.Errorf("/dev/%s is in QEMU's root", n)
		}
	}
	if err := os.WriteFile("/probe", nil, 0o644); err == nil {
		t.Error("QEMU's root is writable")
	}
	for _, p := range strings.Split(os.Getenv("BULWARK_PROBE_ABSENT"), ":") {
		if p == "" {
			continue
		}
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists in QEMU's root (%v)", p, err)
		}
	}
	// Host sockets: the path one is not in its root, the abstract one not
	// in its network namespace.
	for _, a := range strings.Split(os.Getenv("BULWARK_PROBE_SOCKETS"), ":") {
		if c, err := net.Dial("unix", a); err == nil {
			c.Close()
			t.Errorf("QEMU reached the host's socket %s", a)
		}
	}
	fmt.Printf("pid %d uid %d gid %d; /proc: %d entries; PROBE-DONE\n", os.Getpid(), os.Getuid(), os.Getgid(), len(ents))
}

// TestConfinedQEMUNeedsItsRoot: the jailer's failures stop Start with the
// failed step named. A QEMU wrapper script cannot run confined (its
// interpreter is not in QEMU's root): Start says so, and starts it only
// when asked to run QEMU unconfined.
func TestConfinedQEMUNeedsItsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("confinement needs root")
	}
	e := bootEnv(t)
	wrapper := filepath.Join(t.TempDir(), "qemu-wrapper")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\nexec qemu-system-x86_64 \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := Config{KernelPath: e.vmlinux, InitrdPath: e.basePath, QEMU: wrapper, Accel: AccelAuto, BootTimeout: time.Minute}
	sb, err := Start(context.Background(), cfg)
	if err == nil {
		sb.Close()
		t.Fatal("a QEMU wrapper script ran confined, with no /bin/sh in its root")
	}
	t.Logf("refused: %v", err)
	for _, want := range []string{"confining QEMU: exec " + wrapper, "--no-confine"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	cfg.Unconfined = true
	sb, err = Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("unconfined: %v", err)
	}
	sb.Close()
}

// TestParseLdd: the libraries QEMU's root gets, from ldd's output.
func TestParseLdd(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      []string
		err       bool
	}{
		{"dynamic", "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f5e)\n" +
			"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f5e)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f5e)\n",
			[]string{"/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}, false},
		{"static", "\tstatically linked\n", nil, false},
		{"missing", "\tlibz.so.1 => not found\n", nil, true},
		{"relative path ignored", "\tlibq.so => ./libq.so (0x1)\n", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLdd([]byte(tc.out))
			if (err != nil) != tc.err || strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("parseLdd = %q, %v; want %q (error %v)", got, err, tc.want, tc.err)
			}
		})
	}
}
