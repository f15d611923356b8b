package kvm

import (
	"slices"
	"strings"
	"testing"
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
