package e2e

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// attachScript is what the terminal container runs: it reports its
// terminal and size each time the size changes, until the size is the
// one driveExecTTY resizes to (50x132); then it reads a line and prints
// the size again with the line, as driveExecTTY's ttyScript does. It
// starts before anyone attaches: what it printed at 24x80 goes to its
// log, and the attach's own resize (the host terminal's size) makes it
// report again to the attached terminal.
const attachScript = `last=""; while :; do s=$(stty size); if [ "$s" != "$last" ]; then echo "pts $(tty)"; echo "size $s"; last=$s; fi; [ "$s" = "50 132" ] && break; sleep 1; done; read line; echo "size $(stty size) got $line"`

// TestContainerdPodAttach runs containers of a pod VM with their own
// stdin and terminal (CRI stdin and tty: true) through the real
// containerd, crictl, shim, host service (Run's container_tty for the
// pod's first container, AddContainer's stdin for the next, then
// ContainerInput) and guest (CONTAINER_STDIN, CONTAINER_RESIZE):
//   - crictl attach -i -t to the first container, driven through a host
//     pseudo-terminal as a user's shell does: its process runs on a
//     terminal of its root (tty names /dev/pts/N), takes the host
//     terminal's size from the attach and then its resize (crictl exec
//     stty -F sees it on that pts), and reads a line typed in raw mode,
//     echoed by the guest's terminal; it exits 0.
//   - crictl attach -i to a second container running cat with stdin_once:
//     what is piped in is what cat prints (its log) and, at the end of
//     the attach's input, cat reads the end of its stdin and exits 0.
func TestContainerdPodAttach(t *testing.T) {
	needContainerd(t, true)
	e := setup(t)
	buildShim(t)
	dir := e.path("attach")
	e.must("launcher", "image", "build", "-o", dir, "--ref", "local/attach:1", "--busybox", "sh,echo,cat,tty,stty,sleep,test,[",
		"--entrypoint", "/bin/sh", "--cmd", "-c", "--cmd", "exec cat")
	e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", dir)
	tarLayout(t, dir, dir+".tar")
	e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", dir, "--signer", e.path("cosign.pub"), "--name", "attach", "-o", e.path("attestd/policies/attach.yaml"))
	// The containers' commands replace the image's, and the CRI sets TERM
	// for a container with a terminal: both are measured, and allowed.
	pol, err := os.ReadFile(e.path("attestd/policies/attach.yaml"))
	if err != nil || !strings.Contains(string(pol), "allow: none") || strings.Contains(string(pol), "\nenv:") {
		t.Fatalf("the policy does not read as expected (%v):\n%s", err, pol)
	}
	pol = []byte(strings.Replace(string(pol), "allow: none", "allow: any", 1) + "env:\n  keys: [TERM]\n")
	if err := os.WriteFile(e.path("attestd/policies/attach.yaml"), pol, 0o600); err != nil {
		t.Fatal(err)
	}
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
	e.must("launcher", "image", "build", "-o", e.path("pause"), "--ref", "docker.io/local/pause:1", "--busybox", "sleep",
		"--entrypoint", "/bin/sleep", "--cmd", "3600")
	tarLayout(t, e.path("pause"), e.path("pause.tar"))

	e.startDaemon(t)
	cri := e.startContainerd(t, true)
	for _, args := range [][]string{
		{"-n", "k8s.io", "images", "import", e.path("pause.tar")},
		{"-n", "k8s.io", "images", "import", dir + ".tar"},
		{"-n", "k8s.io", "images", "tag", "local/attach:1", "docker.io/local/attach:1"},
	} {
		if out, err := exec.Command("ctr", append([]string{"-a", cri.sock}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	sig, err := os.ReadFile(dir + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	payload, err := os.ReadFile(dir + ".payload.json")
	if err != nil {
		t.Fatal(err)
	}
	writeJSON := func(name string, v any) string {
		b, _ := json.Marshal(v)
		p := e.path(name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	podCfg := writeJSON("attach-pod.json", map[string]any{
		"metadata": map[string]any{"name": "attach", "namespace": "default", "uid": "attach-uid"},
		"annotations": map[string]string{
			"bulwark.dev/policy": "attach", "bulwark.dev/kernel": e.path("vmlinux"), "bulwark.dev/initrd": e.path("base.cpio"),
			"bulwark.dev/template": "none",
		},
		"log_directory": e.path("attach-logs"),
		"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
	})
	ctrCfg := func(name string, extra map[string]any) string {
		c := map[string]any{"metadata": map[string]any{"name": name},
			"image": map[string]any{"image": "docker.io/local/attach:1"}, "log_path": name + ".log",
			"annotations": map[string]string{"bulwark.dev/image-signature": string(sig),
				"bulwark.dev/image-signature-payload": base64.StdEncoding.EncodeToString(payload)}}
		for k, v := range extra {
			c[k] = v
		}
		return writeJSON(name+"-ctr.json", c)
	}
	out, err := cri.crictl("runp", "--runtime", "bulwark", podCfg)
	if err != nil {
		t.Fatal(err)
	}
	podID := strings.TrimSpace(out)
	t.Cleanup(func() { cri.crictl("stopp", podID); cri.crictl("rmp", podID) })
	start := func(name string, extra map[string]any) string {
		t.Helper()
		out, err := cri.crictl("create", podID, ctrCfg(name, extra), podCfg)
		if err != nil {
			t.Fatal(err)
		}
		id := strings.TrimSpace(out)
		if _, err := cri.crictl("start", id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	crictl := func(args ...string) *exec.Cmd {
		return exec.Command("crictl", append([]string{"--runtime-endpoint", "unix://" + cri.sock, "--image-endpoint", "unix://" + cri.sock, "--timeout", "300s"}, args...)...)
	}
	waitExited := func(id string, code int) {
		t.Helper()
		eventually(t, 180*time.Second, "container "+id+" exits", func() (bool, string) {
			st := cri.inspect(t, id)
			return st.State == "CONTAINER_EXITED", st.State
		})
		if st := cri.inspect(t, id); st.ExitCode != code {
			t.Errorf("container %s exited with %d, want %d", id, st.ExitCode, code)
		}
	}

	// The pod's first container (it boots the pod VM) on a terminal.
	tty := start("tty", map[string]any{"stdin": true, "tty": true, "command": []string{"/bin/sh", "-c", attachScript}})
	var sb psEntry
	for _, p := range e.ps(t, true) {
		sb = p
	}
	if sb.Status != "running" || sb.QEMUPID == 0 {
		t.Fatalf("the pod VM: %+v", sb)
	}
	e.killOnCleanup(t, sb.ID)
	driveExecTTY(t, crictl("attach", "-i", "-t", tty), func(pts string) bool {
		out, err := crictl("exec", tty, "stty", "-F", pts, "size").Output()
		return err == nil && string(out) == "50 132\n"
	})
	waitExited(tty, 0)

	// An added container with stdin alone: cat.
	cat := start("cat", map[string]any{"stdin": true, "stdin_once": true, "command": []string{"cat"}})
	in := strings.Repeat("attached line\n", 3000) // more than one fifo read, one frame
	c := crictl("attach", "-i", cat)
	c.Stdin = strings.NewReader(in)
	if b, err := c.CombinedOutput(); err != nil {
		t.Errorf("crictl attach -i %s: %v\n%s", cat, err, b)
	}
	waitExited(cat, 0)
	logs, err := crictl("logs", cat).Output()
	if err != nil || string(logs) != in {
		t.Errorf("cat's log: %d bytes (want %d), %v", len(logs), len(in), err)
	}
}
