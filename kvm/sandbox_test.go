package kvm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bulwark-project/bulwark/enclave/wrap"
)

// syncBuffer is a bytes.Buffer safe for the sandbox's writer goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func startSandbox(t *testing.T, ctx context.Context, e *testEnv, img v1.Image, mod func(*Config)) (*Sandbox, *syncBuffer, *syncBuffer, *syncBuffer) {
	t.Helper()
	disk := buildDisk(t, img)
	kernel, err := os.Open(e.vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kernel.Close() })
	var stdout, stderr, console syncBuffer
	cfg := Config{
		Kernel:      kernel,
		InitrdPath:  e.basePath,
		Image:       disk.File,
		Accel:       AccelAuto,
		MemoryMiB:   256,
		BootTimeout: 90 * time.Second,
		Stdout:      &stdout,
		Stderr:      &stderr,
		Console:     &console,
		Logger:      testLogger(t),
	}
	if c := os.Getenv("BULWARK_TEST_CMDLINE"); c != "" {
		cfg.Cmdline = c
	}
	if mod != nil {
		mod(&cfg)
	}
	sb, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sb.Close()
		if t.Failed() || os.Getenv("BULWARK_TEST_CONSOLE") != "" {
			t.Logf("console:\n%s", console.String())
		}
	})
	return sb, &stdout, &stderr, &console
}

// TestSandboxRunsWorkload boots the host kernel under the chosen
// accelerator with a two-layer busybox image and checks what the workload
// sees (secret, user, working directory, env, whiteouts) and what comes
// back (stdout, stderr, exit code).
func TestSandboxRunsWorkload(t *testing.T) {
	e := bootEnv(t)
	script := strings.Join([]string{
		"echo hello",
		"cat /run/secrets/db; echo",
		"echo to-stderr >&2",
		"[ -e /etc/gone ] && echo WHITEOUT-IGNORED",
		"[ -e /opq/old ] && echo OPAQUE-IGNORED",
		"[ -e /init ] && echo AGENT-VISIBLE",
		"ls /dev | grep -q vport && echo PORT-VISIBLE",
		"cat /opq/new /links/b",
		"echo uid=$(id -u) gid=$(id -g) pwd=$(pwd) greeting=$GREETING host=$(hostname)",
		"ls -ln /run/secrets/db",
		"exit 7",
	}, "\n")
	img := testImage(t, v1.Config{
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{script},
		Env:        []string{"PATH=/bin", "GREETING=hi"},
		WorkingDir: "/work",
		User:       "app",
	})
	ctx := context.Background()
	start := time.Now()
	// A sandbox id of its own per run: its cgroup's name is machine-wide.
	sandboxID := fmt.Sprintf("%016x%016x", time.Now().UnixNano(), os.Getpid())
	sb, stdout, stderr, console := startSandbox(t, ctx, e, img, func(c *Config) { c.Name = sandboxID })
	t.Logf("accelerator: %s (%s)", sb.Accel(), sb.AccelReason())
	pub, err := sb.GuestKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("agent said hello after %v", time.Since(start))
	// QEMU runs under its seccomp sandbox (-sandbox on,...): filter mode 2.
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", sb.PID())); err == nil {
		if !strings.Contains(string(st), "Seccomp:\t2") {
			t.Errorf("QEMU is not under a seccomp filter:\n%s", st)
		}
	}
	// QEMU runs in the sandbox's own cgroup (v2, or cpu+memory+pids on v1).
	if sb.cg == nil {
		t.Error("the sandbox has no cgroup")
	} else if cgs, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", sb.PID())); err != nil || !strings.Contains(string(cgs), "/bulwark/") {
		t.Errorf("QEMU is not in a bulwark cgroup (%v):\n%s", err, cgs)
	}
	wrapped, err := wrap.Seal(pub, sandboxID, "db", []byte("s3cret-pw"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.StartWorkload(ctx, []Secret{{Name: "db", Wrapped: wrapped}}, nil); err != nil {
		t.Fatal(err)
	}
	code, err := sb.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("workload exited after %v; QEMU peak RSS %d KiB", time.Since(start), sb.MaxRSSKiB())
	if code != 7 {
		t.Errorf("exit code = %d, want 7", code)
	}
	out := stdout.String()
	for _, want := range []string{
		"hello\ns3cret-pw\n",
		"from layer 2\nhard-linked\n",
		"uid=1000 gid=1000 pwd=/work greeting=hi host=" + sandboxID[:12],
		"-r--------    1 1000     1000             9 ", // ls -ln of the secret: 0400, owned by the workload user
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"WHITEOUT-IGNORED", "OPAQUE-IGNORED", "AGENT-VISIBLE", "PORT-VISIBLE"} {
		if strings.Contains(out, bad) {
			t.Errorf("stdout has %s:\n%s", bad, out)
		}
	}
	if got := stderr.String(); got != "to-stderr\n" {
		t.Errorf("stderr = %q", got)
	}
	if !processGone(sb.PID()) {
		t.Error("QEMU still running after Wait")
	}
	// The guest made its key only after the host's identity: entropy added
	// with a forced CRNG reseed, the clock set (the agent fails otherwise).
	if !strings.Contains(console.String(), "identity applied: entropy added, CRNG reseeded, clock set") {
		t.Errorf("the agent did not apply the host's identity; console:\n%s", console.String())
	}
}

// TestSandboxSecretDoesNotOpen forwards a secret wrapped for another
// sandbox id: the agent must refuse it and never run the workload.
func TestSandboxSecretDoesNotOpen(t *testing.T) {
	e := bootEnv(t)
	img := testImage(t, v1.Config{Cmd: []string{"/bin/sh"}})
	ctx := context.Background()
	sb, stdout, _, _ := startSandbox(t, ctx, e, img, nil)
	pub, err := sb.GuestKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := wrap.Seal(pub, "another-sandbox", "db", []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	err = sb.StartWorkload(ctx, []Secret{{Name: "db", Wrapped: wrapped}}, []string{"sh", "-c", "echo WORKLOAD-RAN"})
	var ge *GuestError
	if !errors.As(err, &ge) || !strings.Contains(ge.Message, `secret "db" does not open`) {
		t.Fatalf("StartWorkload error = %v, want a GuestError about secret db", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatal("the error leaks the secret")
	}
	code, err := sb.Wait(ctx)
	if err == nil {
		t.Fatalf("Wait = %d, nil; want an error", code)
	}
	if strings.Contains(stdout.String(), "WORKLOAD-RAN") {
		t.Fatal("the workload ran although its secret did not open")
	}
	if !processGone(sb.PID()) {
		t.Error("QEMU still running")
	}
}

// TestSandboxBootTimeout boots a guest that hangs (no init to run, and no
// panic=-1, so the kernel panics and waits forever): the launch must end at
// BootTimeout with the console tail in the error, and QEMU must be gone.
func TestSandboxBootTimeout(t *testing.T) {
	e := bootEnv(t)
	img := testImage(t, v1.Config{Cmd: []string{"/bin/true"}})
	ctx := context.Background()
	khz, err := HostTSCkHz()
	if err != nil {
		t.Fatal(err)
	}
	sb, _, _, _ := startSandbox(t, ctx, e, img, func(c *Config) {
		c.BootTimeout = 10 * time.Second
		c.Cmdline = fmt.Sprintf("console=ttyS0 rdinit=/does-not-exist loglevel=7 8250.nr_uarts=1 tsc_early_khz=%d", khz)
	})
	begin := time.Now()
	_, err = sb.GuestKey(ctx)
	if !errors.Is(err, ErrBootTimeout) {
		t.Fatalf("GuestKey error = %v, want ErrBootTimeout", err)
	}
	if !strings.Contains(err.Error(), "last console lines:") {
		t.Fatalf("error has no console tail: %v", err)
	}
	if !strings.Contains(err.Error(), "Kernel panic") {
		t.Fatalf("console tail does not show the hung guest's panic: %v", err)
	}
	if n := strings.Count(err.Error(), "\n"); n > 45 {
		t.Fatalf("console tail has %d lines, want at most ~40", n)
	}
	t.Logf("boot timeout error after %v:\n%v", time.Since(begin), err)
	if _, werr := sb.Wait(ctx); !errors.Is(werr, ErrBootTimeout) {
		t.Fatalf("Wait error = %v, want ErrBootTimeout", werr)
	}
	if !processGone(sb.PID()) {
		t.Fatal("QEMU still running after the boot timeout")
	}
}

// TestSandboxCancel cancels the context given to Start while the guest
// boots: QEMU must be killed promptly.
func TestSandboxCancel(t *testing.T) {
	e := bootEnv(t)
	img := testImage(t, v1.Config{Cmd: []string{"/bin/true"}})
	ctx, cancel := context.WithCancel(context.Background())
	sb, _, _, _ := startSandbox(t, ctx, e, img, nil)
	pid := sb.PID()
	if processGone(pid) {
		t.Fatal("QEMU is not running after Start")
	}
	cancel()
	deadline := time.Now().Add(30 * time.Second)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			t.Fatal("QEMU still running 30 s after cancel")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := sb.Wait(context.Background()); err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait error = %v, want one wrapping context.Canceled", err)
	}
}

// TestSandboxAbort aborts after the guest key arrived (as the launcher does
// when attestation fails): the workload never runs and the VM goes away.
func TestSandboxAbort(t *testing.T) {
	e := bootEnv(t)
	img := testImage(t, v1.Config{Cmd: []string{"/bin/sh", "-c", "echo WORKLOAD-RAN"}})
	ctx := context.Background()
	sb, stdout, _, console := startSandbox(t, ctx, e, img, nil)
	if _, err := sb.GuestKey(ctx); err != nil {
		t.Fatal(err)
	}
	sb.Abort("policy denied the launch")
	if !processGone(sb.PID()) {
		t.Fatal("QEMU still running after Abort")
	}
	_, err := sb.Wait(ctx)
	if !errors.Is(err, ErrAborted) {
		t.Fatalf("Wait error = %v, want ErrAborted", err)
	}
	if strings.Contains(stdout.String(), "WORKLOAD-RAN") {
		t.Fatal("the workload ran after Abort")
	}
	if !strings.Contains(console.String(), "policy denied the launch") {
		t.Errorf("the agent did not log the abort reason; console:\n%s", console.String())
	}
}

// TestSandboxDiesWithLauncher kills a process that started a sandbox (as
// a crashed or SIGKILLed launcher would be): QEMU must not outlive it.
func TestSandboxDiesWithLauncher(t *testing.T) {
	e := bootEnv(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSandboxProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "BULWARK_HELPER_KERNEL="+e.vmlinux, "BULWARK_HELPER_INITRD="+e.basePath)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	pid := 0
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "QEMU-PID="); ok {
			pid, _ = strconv.Atoi(v)
			break
		}
	}
	if pid == 0 {
		t.Fatal("helper did not report a QEMU pid")
	}
	if processGone(pid) {
		t.Fatal("QEMU not running in the helper")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatal("QEMU outlived the process that started it")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHelperSandboxProcess is run by TestSandboxDiesWithLauncher as a
// separate process; it does nothing in a normal test run.
func TestHelperSandboxProcess(t *testing.T) {
	kernel, initrd := os.Getenv("BULWARK_HELPER_KERNEL"), os.Getenv("BULWARK_HELPER_INITRD")
	if kernel == "" {
		t.Skip("helper process for TestSandboxDiesWithLauncher")
	}
	sb, err := Start(context.Background(), Config{KernelPath: kernel, InitrdPath: initrd, Accel: AccelAuto, BootTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("QEMU-PID=%d\n", sb.PID())
	time.Sleep(time.Minute)
}

// TestSandboxForcedKVM asks for KVM: where it does not work, Start must
// refuse with the reason (and start nothing); where it does, the guest
// must run under KVM.
func TestSandboxForcedKVM(t *testing.T) {
	e := bootEnv(t)
	img := testImage(t, v1.Config{Cmd: []string{"/bin/true"}})
	disk := buildDisk(t, img)
	cfg := Config{KernelPath: e.vmlinux, InitrdPath: e.basePath, Image: disk.File, Accel: AccelKVM, BootTimeout: time.Minute}
	probe := ProbeKVM()
	sb, err := Start(context.Background(), cfg)
	if probe != nil {
		if err == nil {
			sb.Close()
			t.Fatalf("Start with Accel kvm succeeded although KVM does not work here (%v)", probe)
		}
		if !errors.Is(err, ErrKVMUnavailable) || !strings.Contains(err.Error(), "accelerator kvm was requested") {
			t.Fatalf("error %v does not say why KVM cannot be used", err)
		}
		t.Logf("refused as expected: %v", err)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if sb.Accel() != AccelKVM {
		t.Fatalf("Accel() = %s", sb.Accel())
	}
	if err := sb.StartWorkload(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	if code, err := sb.Wait(context.Background()); err != nil || code != 0 {
		t.Fatalf("Wait = %d, %v", code, err)
	}
}

// TestSandboxClose closes a running sandbox: QEMU is asked to quit over
// QMP and is gone when Close returns.
func TestSandboxClose(t *testing.T) {
	e := bootEnv(t)
	img := testImage(t, v1.Config{Cmd: []string{"/bin/true"}})
	sb, _, _, _ := startSandbox(t, context.Background(), e, img, nil)
	pid := sb.PID()
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	if !processGone(pid) {
		t.Fatal("QEMU still running after Close")
	}
	if r := sb.ShutdownReason(); r != "host-qmp-quit" {
		t.Errorf("shutdown reason %q, want host-qmp-quit", r)
	}
	if err := sb.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := sb.Wait(context.Background()); err == nil {
		t.Fatal("Wait after Close reported success")
	}
}

// TestSandboxAbortRunningWorkload aborts while the workload runs: the agent
// ends it and powers off; Wait reports the abort.
func TestSandboxAbortRunningWorkload(t *testing.T) {
	e := bootEnv(t)
	img := testImage(t, v1.Config{Cmd: []string{"/bin/sh", "-c", "echo started; sleep 600; echo NOT-KILLED"}})
	ctx := context.Background()
	sb, stdout, _, console := startSandbox(t, ctx, e, img, nil)
	if err := sb.StartWorkload(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	waitForOutput(t, stdout, "started")
	begin := time.Now()
	sb.Abort("operator stop")
	if !processGone(sb.PID()) {
		t.Fatal("QEMU still running after Abort")
	}
	if _, err := sb.Wait(ctx); !errors.Is(err, ErrAborted) {
		t.Fatalf("Wait error = %v, want ErrAborted", err)
	}
	if strings.Contains(stdout.String(), "NOT-KILLED") {
		t.Fatal("the workload went on")
	}
	if !strings.Contains(console.String(), "host aborted the workload") {
		t.Errorf("the agent did not end the workload itself (VM killed after %v); console:\n%s", time.Since(begin), console.String())
	}
}

// TestSandboxStopRunningWorkload: Stop gives the workload SIGTERM and a
// grace period; one that handles it exits with its own code, one that
// ignores it is killed when the grace period ends. Either way the exit
// status comes back (the launcher's Ctrl-C path).
func TestSandboxStopRunningWorkload(t *testing.T) {
	e := bootEnv(t)
	for _, tc := range []struct {
		name, script string
		grace        time.Duration
		wantCode     int
		wantOut      string
	}{
		{"handles SIGTERM", `trap 'echo got-TERM; exit 3' TERM; echo started; while :; do sleep 1; done`, 30 * time.Second, 3, "got-TERM"},
		{"ignores SIGTERM", `trap '' TERM; echo started; while :; do sleep 1; done`, time.Second, 128 + 9, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := testImage(t, v1.Config{Cmd: []string{"/bin/sh", "-c", tc.script}})
			ctx := context.Background()
			sb, stdout, _, console := startSandbox(t, ctx, e, img, nil)
			if err := sb.Stop(time.Second); err == nil {
				t.Fatal("Stop before the workload runs succeeded")
			}
			if err := sb.StartWorkload(ctx, nil, nil); err != nil {
				t.Fatal(err)
			}
			waitForOutput(t, stdout, "started")
			if err := sb.Stop(tc.grace); err != nil {
				t.Fatal(err)
			}
			code, err := sb.Wait(ctx)
			if err != nil {
				t.Fatalf("Wait: %v; console:\n%s", err, console.String())
			}
			if code != tc.wantCode || !strings.Contains(stdout.String(), tc.wantOut) {
				t.Fatalf("exit %d, want %d; stdout:\n%s", code, tc.wantCode, stdout.String())
			}
		})
	}
}

// waitForOutput polls the workload's output until it holds want. A booted
// guest prints within a second on an idle machine; the bound is a safety
// net, wide enough for a 2-core machine under a load of 16 (where 30 s
// once was not).
func waitForOutput(t *testing.T, out *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the workload did not print %q in 3 minutes; it printed:\n%s", want, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSandboxWithoutImage: a sandbox started without an image disk has an
// empty disk slot; START is refused by the agent, saying there is no image,
// and no workload runs.
func TestSandboxWithoutImage(t *testing.T) {
	e := bootEnv(t)
	ctx := context.Background()
	var console syncBuffer
	sb, err := Start(ctx, Config{KernelPath: e.vmlinux, InitrdPath: e.basePath, MemoryMiB: 256, BootTimeout: 90 * time.Second, Console: &console})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	err = sb.StartWorkload(ctx, nil, []string{"/bin/true"})
	var ge *GuestError
	if !errors.As(err, &ge) || !strings.Contains(ge.Message, "no image in this sandbox") {
		t.Fatalf("StartWorkload = %v, want a guest error saying there is no image\nconsole:\n%s", err, console.String())
	}
	if code, err := sb.Wait(ctx); err == nil {
		t.Fatalf("Wait = %d, nil; want an error", code)
	}
}
