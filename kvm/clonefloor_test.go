package kvm

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestCloneQEMUProcess: a TCG clone's QEMU is started without what only a
// boot needs and without what costs an idle clone memory for nothing: no
// kernel, initramfs or command line on its command line (its memory has
// them), and transparent huge pages off (THP_enabled 0 in its status),
// where a cold boot's QEMU keeps them.
func TestCloneQEMUProcess(t *testing.T) {
	dir, e := sharedTemplate(t)
	tpl, err := LoadTemplate(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tpl.Close()
	if tpl.Info.Recipe.Accel != AccelTCG {
		t.Skip("the template is not a TCG one")
	}
	disk := buildDisk(t, testImage(t, v1.Config{Cmd: []string{"/bin/sleep", "100000"}}))
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		clone      bool
		wantTHP    string
		wantKernel bool
	}{
		{"clone", true, "0", false},
		{"cold", false, "1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := templateConfig(t, e)
			cfg.Image, cfg.Name = disk.File, "qemuproc-"+tc.name
			if tc.clone {
				cfg.Template = tpl
			}
			sb, err := Start(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			if _, err := sb.GuestKey(ctx); err != nil {
				t.Fatal(err)
			}
			if got := procStatus(t, sb.PID())["THP_enabled"]; got != tc.wantTHP {
				t.Errorf("THP_enabled %q, want %q", got, tc.wantTHP)
			}
			raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", sb.PID()))
			if err != nil {
				t.Fatal(err)
			}
			args := strings.Split(string(raw), "\x00")
			for _, opt := range []string{"-kernel", "-initrd", "-append"} {
				if slices.Contains(args, opt) != tc.wantKernel {
					t.Errorf("%s on the command line: %v, want %v", opt, !tc.wantKernel, tc.wantKernel)
				}
			}
		})
	}
}
