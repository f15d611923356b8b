package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkPodStart: a pod started through the CRI as the kubelet starts
// it (crictl runp, create, start) until its container runs in its
// measured, attested pod VM (one VM per pod, the default), from a clone
// of a pod template and, as the baseline in the same iteration, from a
// cold boot of the same recipe. Each pod is stopped and removed after it
// is timed.
func BenchmarkPodStart(b *testing.B) {
	needContainerd(b, true)
	e := setup(b)
	buildShim(b)
	e.must("launcher", "image", "build", "-o", e.path("srv"), "--ref", "local/srv:1", "--busybox", "sh,echo,sleep",
		"--entrypoint", "/bin/sh", "--cmd", "-c", "--cmd", `echo up; while :; do sleep 1; done`)
	e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", e.path("srv"))
	e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", e.path("srv"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "srv",
		"-o", e.path("attestd/policies/srv.yaml"))
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
	e.must("launcher", "template", "create", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"), "--name", "pods", "--pod")
	e.must("launcher", "image", "build", "-o", e.path("pause"), "--ref", "docker.io/local/pause:1", "--busybox", "sleep",
		"--entrypoint", "/bin/sleep", "--cmd", "3600")
	tarLayout(b, e.path("srv"), e.path("srv.tar"))
	tarLayout(b, e.path("pause"), e.path("pause.tar"))
	sig, err := os.ReadFile(e.path("srv.sig"))
	if err != nil {
		b.Fatal(err)
	}
	payload, err := os.ReadFile(e.path("srv.payload.json"))
	if err != nil {
		b.Fatal(err)
	}
	e.startDaemon(b)
	cri := e.startContainerdIn(b, e.path("containerd-cri"), true)
	for _, args := range [][]string{
		{"-n", "k8s.io", "images", "import", e.path("pause.tar")},
		{"-n", "k8s.io", "images", "import", e.path("srv.tar")},
		{"-n", "k8s.io", "images", "tag", "local/srv:1", "docker.io/local/srv:1"},
	} {
		if out, err := exec.Command("ctr", append([]string{"-a", cri.sock}, args...)...).CombinedOutput(); err != nil {
			b.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	ctrCfg, _ := json.Marshal(map[string]any{"metadata": map[string]any{"name": "srv"}, "image": map[string]any{"image": "docker.io/local/srv:1"}, "log_path": "srv.log"})
	if err := os.WriteFile(e.path("srv-ctr.json"), ctrCfg, 0o600); err != nil {
		b.Fatal(err)
	}
	n := 0
	// start starts one pod (template "" is the recipe's own: a clone;
	// "none": a cold boot), returns how long until its container ran,
	// and removes it.
	start := func(template string) time.Duration {
		n++
		ann := map[string]string{
			"bulwark.dev/policy": "srv", "bulwark.dev/kernel": e.path("vmlinux"), "bulwark.dev/initrd": e.path("base.cpio"),
			"bulwark.dev/image-signature":         string(sig),
			"bulwark.dev/image-signature-payload": base64.StdEncoding.EncodeToString(payload),
		}
		if template != "" {
			ann["bulwark.dev/template"] = template
		}
		name := fmt.Sprintf("bench-%d", n)
		pod, _ := json.Marshal(map[string]any{
			"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name + "-uid"},
			"annotations":   ann,
			"log_directory": e.path("pod-logs-" + name),
			"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
		})
		podFile := e.path(name + ".json")
		if err := os.WriteFile(podFile, pod, 0o600); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		out, err := cri.crictl("runp", "--runtime", "bulwark", podFile)
		if err != nil {
			b.Fatal(err)
		}
		podID := strings.TrimSpace(out)
		if out, err = cri.crictl("create", podID, e.path("srv-ctr.json"), podFile); err != nil {
			b.Fatal(err)
		}
		ctrID := strings.TrimSpace(out)
		if _, err := cri.crictl("start", ctrID); err != nil {
			b.Fatal(err)
		}
		took := time.Since(t0)
		out, err = cri.crictl("inspect", "-o", "json", ctrID)
		var st struct {
			Status struct{ State string } `json:"status"`
		}
		if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.Status.State != "CONTAINER_RUNNING" {
			b.Fatalf("the container is not running after start: %v\n%s", err, out)
		}
		for _, args := range [][]string{{"stop", ctrID}, {"rm", ctrID}, {"stopp", podID}, {"rmp", podID}} {
			if _, err := cri.crictl(args...); err != nil {
				b.Fatal(err)
			}
		}
		return took
	}
	var clones, colds []time.Duration
	for b.Loop() {
		clones = append(clones, start(""))
		colds = append(colds, start("none"))
	}
	if left := e.ps(b, true); len(left) != 0 {
		b.Errorf("the host service still lists %d sandboxes: %+v", len(left), left)
	}
	median := func(d []time.Duration) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[len(s)/2].Milliseconds())
	}
	c, k := median(clones), median(colds)
	b.ReportMetric(c, "clone-ms/pod")
	b.ReportMetric(k, "cold-ms/pod")
	b.ReportMetric(k/c, "speedup")
	b.ReportMetric(0, "ns/op")
}
