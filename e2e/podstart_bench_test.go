package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
// is timed. Two variants, in one run: host-network pods (a pod template
// without a network device) and pods with a network namespace of their
// own, from a CNI bridge, reached by the pod VM through a tap in it (a
// --pod --net template); the latter is skipped without the CNI plugins.
func BenchmarkPodStart(b *testing.B) {
	needContainerd(b, true)
	e := setup(b)
	buildShim(b)
	e.must("launcher", "image", "build", "-o", e.path("srv"), "--ref", "local/srv:1", "--busybox", "sh,echo,sleep",
		"--entrypoint", "/bin/sh", "--cmd", "-c", "--cmd", `echo up; while :; do sleep 1; done`)
	e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", e.path("srv"))
	// srv, and srv-net: the same with the pod network's tap allowed.
	for _, name := range []string{"srv", "srv-net"} {
		e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
			"--image", e.path("srv"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", name,
			"-o", e.path("attestd/policies/"+name+".yaml"))
	}
	f, err := os.OpenFile(e.path("attestd/policies/srv-net.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.WriteString("network:\n  allow: [tap]\n"); err != nil {
		b.Fatal(err)
	}
	f.Close()
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
	e.must("launcher", "template", "create", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"), "--name", "pods", "--pod")
	cniMissing := ""
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat("/usr/lib/cni/" + p); err != nil {
			cniMissing = "CNI plugin " + p + " not found: apt-get install containernetworking-plugins (make deps)"
		}
	}
	if cniMissing == "" {
		e.must("launcher", "template", "create", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"), "--name", "pods-net", "--pod", "--net")
		// The CNI network, as TestContainerdPodNetwork's: a bridge of
		// the run's own (name and subnet from the pid), deleted at the
		// end; containerd reads DIR/cni.
		dir := e.path("containerd-cri")
		bridge := fmt.Sprintf("bwbench%d", os.Getpid()%100000)
		conflist, _ := json.Marshal(map[string]any{
			"cniVersion": "1.0.0", "name": "bulwark-bench",
			"plugins": []any{map[string]any{
				"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
				"ipam": map[string]any{"type": "host-local", "dataDir": filepath.Join(dir, "cni-ipam"),
					"ranges": []any{[]any{map[string]any{"subnet": fmt.Sprintf("10.87.%d.0/24", os.Getpid()%250)}}}, "routes": []any{map[string]any{"dst": "0.0.0.0/0"}}},
			}},
		})
		if err := os.MkdirAll(filepath.Join(dir, "cni"), 0o700); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cni", "10-bulwark-bench.conflist"), conflist, 0o600); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { exec.Command("ip", "link", "del", bridge).Run() })
	}
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
	// "none": a cold boot), with the host's network or (netns) one of its
	// own, returns how long until its container ran, and removes it.
	start := func(b *testing.B, template string, netns bool) time.Duration {
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
		podCfg := map[string]any{
			"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name + "-uid"},
			"annotations":   ann,
			"log_directory": e.path("pod-logs-" + name),
		}
		if netns {
			ann["bulwark.dev/policy"] = "srv-net"
		} else {
			podCfg["linux"] = map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}}
		}
		pod, _ := json.Marshal(podCfg)
		podFile := e.path(name + ".json")
		if err := os.WriteFile(podFile, pod, 0o600); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		out, err := cri.crictl("runp", "--runtime", "bulwark", podFile)
		if err != nil {
			b.Fatal(err)
		}
		podID, ctrID, removed := strings.TrimSpace(out), "", false
		defer func() { // after a failure too: the next variant starts from nothing
			if removed {
				return
			}
			if ctrID != "" {
				cri.crictl("stop", ctrID)
				cri.crictl("rm", ctrID)
			}
			cri.crictl("stopp", podID)
			cri.crictl("rmp", podID)
		}()
		if out, err = cri.crictl("create", podID, e.path("srv-ctr.json"), podFile); err != nil {
			b.Fatal(err)
		}
		ctrID = strings.TrimSpace(out)
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
		// What was timed is what was meant: a clone of the right
		// template, or a cold boot; the pod's own network on a tap.
		wantTemplate, wantNet := "", "none"
		if template != "none" {
			wantTemplate = "pods"
			if netns {
				wantTemplate = "pods-net"
			}
		}
		if netns {
			wantNet = "tap"
		}
		sbs := e.ps(b, false)
		for _, sb := range sbs {
			if len(sbs) != 1 || sb.Template != wantTemplate || sb.Network != wantNet {
				b.Fatalf("the host service's sandboxes: %+v; want one from template %q with network %q", sbs, wantTemplate, wantNet)
			}
		}
		for _, args := range [][]string{{"stop", ctrID}, {"rm", ctrID}, {"stopp", podID}, {"rmp", podID}} {
			if _, err := cri.crictl(args...); err != nil {
				b.Fatal(err)
			}
		}
		removed = true
		return took
	}
	median := func(d []time.Duration) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[len(s)/2].Milliseconds())
	}
	for _, v := range []struct {
		name  string
		netns bool
	}{{"host-network", false}, {"pod-netns", true}} {
		b.Run(v.name, func(b *testing.B) {
			if v.netns && cniMissing != "" {
				b.Skip(cniMissing)
			}
			var clones, colds []time.Duration
			for b.Loop() {
				clones = append(clones, start(b, "", v.netns))
				colds = append(colds, start(b, "none", v.netns))
			}
			if left := e.ps(b, true); len(left) != 0 {
				b.Errorf("the host service still lists %d sandboxes: %+v", len(left), left)
			}
			c, k := median(clones), median(colds)
			b.ReportMetric(c, "clone-ms/pod")
			b.ReportMetric(k, "cold-ms/pod")
			b.ReportMetric(k/c, "speedup")
			b.ReportMetric(0, "ns/op")
		})
	}
}
