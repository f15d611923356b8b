package kvm

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestGuestTicklessWhenIdle: the guest kernel runs high-resolution timers
// and stops its tick when idle (nohz), once it has switched to them. Without a one-shot timer it trusts
// (under TCG: the ARAT CPUID bit, see cpuModel) it ticks 250 times a
// second, idle, which is what limits how many idle sandboxes a host holds.
func TestGuestTicklessWhenIdle(t *testing.T) {
	e := bootEnv(t)
	img := testImage(t, v1.Config{
		Entrypoint: []string{"/bin/sh", "-c"},
		// The kernel switches to one-shot mode once its TSC clocksource is
		// registered (about a second after boot): wait for it, up to 60 s.
		Cmd: []string{"i=0; while [ $i -lt 600 ] && ! grep -q 'nohz_mode *: 2' /proc/timer_list; do sleep 0.1; i=$((i+1)); done; " +
			"grep -E 'hres_active|nohz_mode|event_handler' /proc/timer_list"},
		Env: []string{"PATH=/bin"},
	})
	disk := buildDisk(t, img)
	var out syncBuffer
	cfg := Config{KernelPath: e.vmlinux, InitrdPath: e.basePath, Image: disk.File, MemoryMiB: 256, BootTimeout: 3 * time.Minute, Stdout: &out}
	ctx := context.Background()
	sb, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if err := sb.StartWorkload(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	if code, err := sb.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("workload: %d, %v", code, err)
	}
	got := out.String()
	norm := strings.Join(strings.Fields(got), " ")
	for _, want := range []string{".hres_active : 1", ".nohz_mode : 2", "event_handler: hrtimer_interrupt"} {
		if !strings.Contains(norm, want) {
			t.Errorf("the guest's /proc/timer_list lacks %q (the guest ticks periodically when idle):\n%s", want, got)
		}
	}
	if strings.Contains(norm, "tick_handle_periodic") {
		t.Errorf("a periodic tick handler in the guest:\n%s", got)
	}
}
