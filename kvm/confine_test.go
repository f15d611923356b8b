package kvm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

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
// the reserved range, with no capabilities, no_new_privs, and network, IPC
// and UTS namespaces of its own; with its credentials a root-only directory
// (as the state directory and launch log are), a TPM-like device node of
// root:tss 0660, and the other sandbox's /proc entries cannot be opened.
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
		for _, c := range []string{"CapInh", "CapPrm", "CapEff", "CapAmb"} {
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
		for _, ns := range []string{"net", "ipc", "uts"} {
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
}
