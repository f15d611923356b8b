package e2e

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestContainerdRestart: containerd restarted while a Bulwark container
// runs finds it again. The shim is a process of its own, so the container
// (its sandbox in the host service, its QEMU) keeps running while
// containerd is down; the next containerd reconnects to the shim and
// everything goes on: the task is listed running, exec works, kill stops
// it with the workload's status, and removal leaves nothing behind.
func TestContainerdRestart(t *testing.T) {
	needContainerd(t, false)
	e := setup(t)
	buildShim(t)
	e.must("launcher", "image", "build", "-o", e.path("loop"), "--ref", "local/loop:1", "--busybox", "sh,echo,sleep,ls",
		"--entrypoint", "/bin/sh", "--cmd", "-c", "--cmd", `trap 'exit 3' TERM; while :; do sleep 1; done`)
	e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", e.path("loop"))
	e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", e.path("loop"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "loop",
		"-o", e.path("attestd/policies/loop.yaml"))
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
	tarLayout(t, e.path("loop"), e.path("loop.tar"))
	sig, err := os.ReadFile(e.path("loop.sig"))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := os.ReadFile(e.path("loop.payload.json"))
	if err != nil {
		t.Fatal(err)
	}
	e.startDaemon(t)
	dir := e.path("containerd")
	// The first containerd's shim outlives it by design; if the test
	// fails before removing the container, it must not outlive the test.
	t.Cleanup(func() {
		for pid := range (&containerd{sock: filepath.Join(dir, "containerd.sock")}).shims() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})

	var sb psEntry
	// The first containerd runs the container detached and is stopped
	// (SIGTERM) when this subtest ends.
	t.Run("first containerd", func(t *testing.T) {
		cd := e.startContainerdIn(t, dir, false)
		if out, err := cd.ctr("images", "import", e.path("loop.tar")).CombinedOutput(); err != nil {
			t.Fatalf("ctr images import: %v\n%s", err, out)
		}
		if out, err := cd.ctr("run", "-d", "--runtime", "io.containerd.bulwark.v2",
			"--annotation", "bulwark.dev/policy=loop",
			"--annotation", "bulwark.dev/kernel="+e.path("vmlinux"),
			"--annotation", "bulwark.dev/initrd="+e.path("base.cpio"),
			"--annotation", "bulwark.dev/template=none",
			"--annotation", "bulwark.dev/image-signature="+string(sig),
			"--annotation", "bulwark.dev/image-signature-payload="+base64.StdEncoding.EncodeToString(payload),
			"local/loop:1", "loop").CombinedOutput(); err != nil {
			t.Fatalf("ctr run -d: %v\n%s", err, out)
		}
		for _, p := range e.ps(t, false) {
			sb = p
		}
		if sb.Status != "running" || sb.QEMUPID == 0 {
			t.Fatalf("the host service's sandbox: %+v", sb)
		}
	})
	if t.Failed() {
		return
	}

	// containerd is down: the sandbox still runs.
	if got := e.ps(t, false)[sb.ID]; got.Status != "running" || got.QEMUPID != sb.QEMUPID {
		t.Fatalf("with containerd stopped the sandbox is %+v, want it running as %+v", got, sb)
	}

	cd := e.startContainerdIn(t, dir, false)
	// The new containerd loads its tasks from the shims it finds.
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _ := cd.ctr("tasks", "ls").Output()
		if strings.Contains(string(out), "loop") && strings.Contains(string(out), "RUNNING") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted containerd does not list the running task:\n%s\n%s", out, cd.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, err := cd.ctr("tasks", "exec", "--exec-id", "after", "loop", "ls", "/run/secrets").Output(); err != nil || strings.TrimSpace(string(out)) != "db" {
		t.Fatalf("ctr tasks exec after the restart: %v\n%s", err, out)
	}
	e.killAndRemove(t, cd, "loop", sb, 3) // the workload's own status: its TERM trap exits 3
	if left := e.ps(t, true); len(left) != 0 {
		t.Errorf("the host service still lists %d sandboxes: %+v", len(left), left)
	}
	deadline = time.Now().Add(30 * time.Second)
	for len(cd.shims()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("shims still run 30 s after the container was removed: %v", cd.shims())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
