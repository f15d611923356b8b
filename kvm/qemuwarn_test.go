package kvm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTemplateHubWarningFiltered: QEMU warns that "hub 0 is not connected
// to host network" for a --net template's device, which is by design on a
// hub with nothing else on it. That known warning is kept out of what a
// user reads of QEMU's stderr — the "QEMU said:" of a failed 'launcher
// template create --net' — while the failure itself is reported. Here
// the template's guest panics (its initramfs is not one) and QEMU ends.
func TestTemplateHubWarningFiltered(t *testing.T) {
	e := bootEnv(t)
	qemu, err := qemuBinary("")
	if err != nil {
		t.Fatal(err)
	}
	notInitrd := filepath.Join(t.TempDir(), "initrd")
	// 0644: QEMU, confined, reads it as another user.
	if err := os.WriteFile(notInitrd, []byte("not an initramfs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmdline, err := DefaultCmdline(AccelTCG)
	if err != nil {
		t.Fatal(err)
	}
	// The warning is QEMU's, for this device: what is filtered exists.
	var netArgs []string
	args := qemuArgs(qemuSpec{accel: AccelTCG, cpus: 1, memoryMiB: 256, network: netTemplate})
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-netdev" || (args[i] == "-device" && strings.HasPrefix(args[i+1], "virtio-net-device")) {
			netArgs = append(netArgs, args[i], args[i+1])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	raw, _ := exec.CommandContext(ctx, qemu, append([]string{"-M", "microvm", "-accel", "tcg", "-m", "256", "-nodefaults", "-display", "none", "-no-reboot",
		"-kernel", e.vmlinux, "-initrd", notInitrd, "-append", cmdline}, netArgs...)...).CombinedOutput()
	if !strings.Contains(string(raw), templateHubWarning) {
		t.Fatalf("QEMU (%s) no longer prints %q for a template's network device (the filter may go); it said:\n%s", strings.Join(netArgs, " "), templateHubWarning, raw)
	}

	cfg := Config{KernelPath: e.vmlinux, InitrdPath: notInitrd, KernelDigest: fileDigest(t, e.vmlinux), InitrdDigest: fileDigest(t, notInitrd),
		MemoryMiB: 256, BootTimeout: 2 * time.Minute, TemplateNet: true}
	_, err = CreateTemplate(ctx, cfg, filepath.Join(t.TempDir(), "tpl"), "t")
	if err == nil {
		t.Fatal("a template was made with an initramfs that is not one")
	}
	if !strings.Contains(err.Error(), "stopped before its agent was ready") {
		t.Fatalf("got %v, want the guest's end reported", err)
	}
	if strings.Contains(err.Error(), "hub 0") {
		t.Errorf("the failure shows QEMU's expected hub warning: %v", err)
	}
	t.Logf("refused: %v", err)
}

// TestLineTailDrop: a tail's drop leaves only those lines out.
func TestLineTailDrop(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec qemuSpec
		in   string
		want string
	}{
		{"template's hub warning dropped", qemuSpec{network: netTemplate},
			"qemu-system-x86_64: warning: hub 0 is not connected to host network\nqemu: could not load kernel\n", "qemu: could not load kernel"},
		{"other warnings kept", qemuSpec{network: netTemplate},
			"qemu-system-x86_64: warning: hub 1 is not connected to host network\nqemu-system-x86_64: warning: something else\n",
			"qemu-system-x86_64: warning: hub 1 is not connected to host network\nqemu-system-x86_64: warning: something else"},
		{"kept without a template's device", qemuSpec{network: NetworkUser},
			"qemu-system-x86_64: warning: hub 0 is not connected to host network\n", "qemu-system-x86_64: warning: hub 0 is not connected to host network"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tail := newLineTail(20, nil)
			tail.setDrop(expectedQEMUStderr(tc.spec))
			for _, b := range []byte(tc.in) { // in any pieces
				tail.Write([]byte{b})
			}
			if got := tail.String(); got != tc.want {
				t.Errorf("tail %q, want %q", got, tc.want)
			}
		})
	}
}
