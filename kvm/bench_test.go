package kvm

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// BenchmarkLaunchVsBareQEMU compares a launch through this package (Start,
// HELLO with the guest key, START, workload exit, power-off) with bare
// qemu-system-x86_64 booting the same kernel and initramfs with the same
// devices, where the agent (cmdline flag bulwark.bench) runs the same
// workload (/bin/true) with no host protocol. Both run in the same loop,
// interleaved, so machine load affects them alike. Run with -benchtime 3x.
// Reports api-ms, bare-ms, overhead-ratio (goal <= 1.15) and QEMU's peak
// RSS per sandbox (rss-MiB, VmHWM from rusage). A third launch in the same
// loop runs QEMU unconfined (Config.Unconfined): confine-ratio and
// confine-rss-ratio are the confined launch's time and memory over it
// (goal <= 1.05: a uid and namespaces of its own cost next to nothing).
func BenchmarkLaunchVsBareQEMU(b *testing.B) {
	e := bootEnv(b)
	img := testImage(b, v1.Config{Cmd: []string{"/bin/true"}})
	disk := buildDisk(b, img)
	choice, err := ChooseAccel(AccelAuto)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("accelerator %s: %s", choice.Accel, choice.Reason)
	cmdline, err := DefaultCmdline(choice.Accel)
	if err != nil {
		b.Fatal(err)
	}
	// The bare run reads the same disk from a file.
	diskPath := filepath.Join(b.TempDir(), "image.erofs")
	data, err := io.ReadAll(io.NewSectionReader(disk.File, 0, disk.Size))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(diskPath, data, 0o644); err != nil {
		b.Fatal(err)
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		b.Skip("qemu-system-x86_64 not installed: apt-get install qemu-system-x86")
	}
	bareArgs := []string{
		"-M", "microvm,x-option-roms=off,pit=on,rtc=on,isa-serial=on", "-accel", accelArg(choice.Accel, 0),
		"-smp", "1", "-m", "256", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "null",
		"-device", "virtio-serial-device,max_ports=2", "-chardev", "null,id=c0",
		"-device", "virtserialport,chardev=c0,name=" + channel.PortName,
		"-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-device,rng=rng0",
		"-drive", "id=image,if=none,format=raw,readonly=on,file=" + diskPath, "-device", "virtio-blk-device,drive=image",
		"-kernel", e.vmlinux, "-initrd", e.basePath, "-append", cmdline + " bulwark.bench",
	}
	bareArgs = append(bareArgs, "-cpu", cpuModel(choice.Accel))
	ctx := context.Background()
	var apiTotal, bareTotal, startDur, helloDur time.Duration
	var rssMax, bareRSS int64
	bare := func() {
		t0 := time.Now()
		cmd := exec.CommandContext(ctx, qemu, bareArgs...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("bare QEMU: %v\n%s", err, out)
		}
		bareTotal += time.Since(t0)
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			bareRSS = max(bareRSS, ru.Maxrss)
		}
	}
	var unconfTotal time.Duration
	var unconfRSS int64
	api := func(unconfined bool) {
		t0 := time.Now()
		sb, err := Start(ctx, Config{KernelPath: e.vmlinux, InitrdPath: e.basePath, Image: disk.File,
			Accel: choice.Accel, Cmdline: cmdline, MemoryMiB: 256, BootTimeout: 2 * time.Minute, Unconfined: unconfined})
		if err != nil {
			b.Fatal(err)
		}
		defer sb.Close()
		startDur += time.Since(t0)
		if _, err := sb.GuestKey(ctx); err != nil {
			b.Fatal(err)
		}
		helloDur += time.Since(t0)
		if err := sb.StartWorkload(ctx, nil, nil); err != nil {
			b.Fatal(err)
		}
		code, err := sb.Wait(ctx)
		if err != nil || code != 0 {
			b.Fatalf("workload: %d, %v", code, err)
		}
		if unconfined {
			unconfTotal += time.Since(t0)
			unconfRSS = max(unconfRSS, sb.MaxRSSKiB())
			return
		}
		apiTotal += time.Since(t0)
		rssMax = max(rssMax, sb.MaxRSSKiB())
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate the order so that load spikes do not favour one side.
		if i%2 == 0 {
			bare()
			api(false)
			api(true)
		} else {
			api(true)
			api(false)
			bare()
		}
	}
	b.StopTimer()
	apiMs := float64(apiTotal.Milliseconds()) / float64(b.N)
	bareMs := float64(bareTotal.Milliseconds()) / float64(b.N)
	b.ReportMetric(apiMs, "api-ms")
	b.ReportMetric(bareMs, "bare-ms")
	b.ReportMetric(apiMs/bareMs, "overhead-ratio")
	b.ReportMetric(float64(startDur.Milliseconds())/float64(b.N), "api-start-ms")
	b.ReportMetric(float64(helloDur.Milliseconds())/float64(b.N), "api-hello-ms")
	b.ReportMetric(float64(rssMax)/1024, "rss-MiB")
	b.ReportMetric(float64(bareRSS)/1024, "bare-rss-MiB")
	unconfMs := float64(unconfTotal.Milliseconds()) / float64(b.N)
	b.ReportMetric(unconfMs, "unconfined-ms")
	b.ReportMetric(apiMs/unconfMs, "confine-ratio")
	b.ReportMetric(float64(unconfRSS)/1024, "unconfined-rss-MiB")
	b.ReportMetric(float64(rssMax)/float64(unconfRSS), "confine-rss-ratio")
	b.ReportMetric(0, "ns/op")
}
