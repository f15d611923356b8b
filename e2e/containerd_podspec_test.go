package e2e

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/measure"
)

// TestContainerdPodSpec runs a CRI pod's containers, whose specs set
// variables, a working directory and a user over their image's, in one
// measured VM through the real containerd, crictl, shim, host service and
// attestd: what the spec sets (and only that) is measured into each
// container's launch event and judged by the pod's policy (env.keys:
// [FOO]); inside the VM each container sees its variables, its working
// directory and its ids; the CRI's HOSTNAME is the guest's hostname, not
// the pod's; the second container, another user, reads the pod's secret
// too; a third that sets a variable the policy does not allow fails its
// start naming it, and nothing of it runs.
func TestContainerdPodSpec(t *testing.T) {
	needContainerd(t, true)
	e := setup(t)
	buildShim(t)
	files := e.path("spec-files")
	for name, body := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
		"etc/group":  "root:x:0:\napp:x:1000:\n",
	} {
		p := filepath.Join(files, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script := `echo "FOO=$FOO BAR=$BAR GREETING=$GREETING pwd=$(pwd) id=$(id -u):$(id -g) host=$HOSTNAME/$(hostname) secret=$(cat /run/secrets/db >/dev/null 2>&1 && echo ok || echo no)"; exec sleep 3600`
	img := e.path("spec-image")
	e.must("launcher", "image", "build", "-o", img, "--ref", "local/spec:1", "--layer", files,
		"--busybox", "sh,echo,cat,id,pwd,hostname,sleep", "--env", "GREETING=hi", "--workdir", "/srv", "--user", "app",
		"--entrypoint", "/bin/sh", "--cmd", "-c", "--cmd", script)
	e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", img)
	tarLayout(t, img, img+".tar")
	// The pod's policy allows FOO over the image's environment, no other.
	e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", img, "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "spec",
		"-o", e.path("attestd/policies/spec.yaml"))
	pol, err := os.ReadFile(e.path("attestd/policies/spec.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	pol = append(pol, "\nenv:\n  keys: [FOO]\n"...)
	if err := os.WriteFile(e.path("attestd/policies/spec.yaml"), pol, 0o600); err != nil {
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
		{"-n", "k8s.io", "images", "import", img + ".tar"},
		{"-n", "k8s.io", "images", "tag", "local/spec:1", "docker.io/local/spec:1"},
	} {
		c := exec.Command("ctr", append([]string{"-a", cri.sock}, args...)...)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	crictl := cri.crictl
	logs := func(id string) string {
		b, _ := exec.Command("crictl", "--runtime-endpoint", "unix://"+cri.sock, "logs", id).CombinedOutput()
		return string(b)
	}
	waitFor := func(t *testing.T, what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(180 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 180 s", what)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	sig, err := os.ReadFile(img + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	payload, err := os.ReadFile(img + ".payload.json")
	if err != nil {
		t.Fatal(err)
	}
	pod := map[string]any{
		"metadata": map[string]any{"name": "spec", "namespace": "default", "uid": "spec-uid"},
		"hostname": "specpod",
		"annotations": map[string]string{
			"bulwark.dev/policy": "spec", "bulwark.dev/kernel": e.path("vmlinux"), "bulwark.dev/initrd": e.path("base.cpio"),
			"bulwark.dev/template": "none", "bulwark.dev/image-signature": string(sig),
			"bulwark.dev/image-signature-payload": base64.StdEncoding.EncodeToString(payload),
		},
		"log_directory": e.path("spec-logs"),
		"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
	}
	container := func(name string, env map[string]string, workdir string, uid int) map[string]any {
		c := map[string]any{"metadata": map[string]any{"name": name},
			"image": map[string]any{"image": "docker.io/local/spec:1"}, "log_path": name + ".log"}
		var envs []map[string]string
		for k, v := range env {
			envs = append(envs, map[string]string{"key": k, "value": v})
		}
		c["envs"] = envs
		if workdir != "" {
			c["working_dir"] = workdir
		}
		if uid >= 0 {
			c["linux"] = map[string]any{"security_context": map[string]any{"run_as_user": map[string]any{"value": uid}}}
		}
		return c
	}
	cfgs := map[string]any{
		"spec-pod.json": pod,
		// a: FOO over the image's environment; its working directory and
		// user are the image's.
		"a.json": container("a", map[string]string{"FOO": "bar", "GREETING": "hi"}, "", -1),
		// b: FOO, another working directory, another user.
		"b.json": container("b", map[string]string{"FOO": "baz"}, "/tmp/w", 2000),
		// c: BAR, which the policy does not allow.
		"c.json": container("c", map[string]string{"FOO": "x", "BAR": "1"}, "", -1),
	}
	for name, v := range cfgs {
		b, _ := json.Marshal(v)
		if err := os.WriteFile(e.path(name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := crictl("runp", "--runtime", "bulwark", e.path("spec-pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	podID := strings.TrimSpace(out)
	t.Cleanup(func() { crictl("stopp", podID); crictl("rmp", podID) })
	ids := map[string]string{}
	for _, n := range []string{"a", "b"} {
		out, err := crictl("create", podID, e.path(n+".json"), e.path("spec-pod.json"))
		if err != nil {
			t.Fatal(err)
		}
		ids[n] = strings.TrimSpace(out)
		if _, err := crictl("start", ids[n]); err != nil {
			t.Fatal(err)
		}
	}
	sbs := e.ps(t, true)
	var sb psEntry
	for _, p := range sbs {
		sb = p
	}
	if len(sbs) != 1 || sb.Status != "running" {
		t.Fatalf("the host service's sandboxes: %+v, want the pod's one VM", sbs)
	}
	e.killOnCleanup(t, sb.ID)
	host := sb.ID[:12]
	for n, want := range map[string]string{
		"a": "FOO=bar BAR= GREETING=hi pwd=/srv id=1000:1000 host=" + host + "/" + host + " secret=ok",
		"b": "FOO=baz BAR= GREETING=hi pwd=/tmp/w id=2000:0 host=" + host + "/" + host + " secret=ok",
	} {
		waitFor(t, "container "+n+"'s output", func() bool { return strings.Contains(logs(ids[n]), "FOO=") })
		if l := logs(ids[n]); !strings.Contains(l, want) {
			t.Errorf("container %s's output from inside the VM:\n%s\nwant %q", n, l, want)
		}
	}
	// Each launch event records what its spec set over the image's, and
	// nothing of the image's own, nor the CRI's HOSTNAME.
	events := podEvents(t, e, sb.ID)
	lg, err := measure.ReadLogFile(filepath.Join(e.state, "launch", "launch.cel"))
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*measure.LaunchEvent{}
	for _, r := range lg.Records() {
		if r.Event != nil {
			byID[r.Event.SandboxID] = r.Event
		}
	}
	for n, want := range map[string]struct{ wd, user string }{"a": {"", ""}, "b": {"/tmp/w", "2000:0"}} {
		ev := byID[events[n]]
		if ev == nil {
			t.Fatalf("no launch event %s for container %s", events[n], n)
		}
		if !slices.Equal(ev.EnvKeys, []string{"FOO"}) || ev.EnvDigest == "" || ev.WorkingDir != want.wd || ev.User != want.user {
			t.Errorf("container %s's launch event: env %v (%q), working dir %q, user %q; want [FOO], %q, %q",
				n, ev.EnvKeys, ev.EnvDigest, ev.WorkingDir, ev.User, want.wd, want.user)
		}
	}
	if byID[events["a"]].EnvDigest == byID[events["b"]].EnvDigest {
		t.Errorf("containers a and b set FOO to different values, yet their env digests are equal")
	}

	// c sets BAR: its start fails with the policy's reason naming it.
	out, err = crictl("create", podID, e.path("c.json"), e.path("spec-pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	ids["c"] = strings.TrimSpace(out)
	_, err = crictl("start", ids["c"])
	if err == nil || !regexp.MustCompile(`(?s)denied by policy "spec".*env: variables "BAR" are not among those the policy allows`).MatchString(err.Error()) {
		t.Fatalf("crictl start of a container setting BAR: %v, want the policy's refusal naming BAR", err)
	}
	if l := logs(ids["c"]); strings.Contains(l, "FOO=") {
		t.Errorf("the refused container ran: %s", l)
	}
	for _, args := range [][]string{{"stopp", podID}, {"rmp", podID}} {
		if _, err := crictl(args...); err != nil {
			t.Fatal(err)
		}
	}
	waitGone(t, sb.QEMUPID)
}
