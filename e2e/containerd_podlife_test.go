package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/measure"
)

// TestContainerdPodLifecycle: a CRI pod VM over its life, through the real
// containerd, crictl, shim, host service (re-attesting every 2 s) and
// attestd.
//   - A pod whose first container does not start fails crictl start and
//     leaves no sandbox behind in the host service.
//   - Containers created, run to their end and removed (crictl rm), more
//     of them than the pod has image slots, each reading the pod's secret:
//     a removed container frees its slot.
//   - The host service killed with -9 and restarted takes the running pod
//     over: the same QEMU, both containers running in the CRI, their
//     output going on into crictl logs, crictl exec working, a new
//     container added and removed; attestd goes on re-attesting the pod's
//     and the added container's launch events.
//   - A policy change that refuses only the second container's image
//     revokes the pod: its secret is gone, the VM stops, every launch
//     event gets its END (revoked), and the CRI shows both containers
//     exited, their logs saying why, and the pod not ready.
func TestContainerdPodLifecycle(t *testing.T) {
	needContainerd(t, true)
	top := t
	e := setup(t)
	buildShim(t)
	scripts := map[string]string{
		"a":    `echo "a fingerprint $(sha256sum /run/secrets/db | cut -d' ' -f1)"; i=0; while :; do echo "a tick $i"; i=$((i+1)); sleep 1; done`,
		"b":    `echo "b fingerprint $(sha256sum /run/secrets/db | cut -d' ' -f1)"; i=0; while :; do echo "b tick $i"; i=$((i+1)); sleep 1; done`,
		"bad":  "",
		"once": `echo "once $(sha256sum /run/secrets/db | cut -d' ' -f1)"`,
	}
	digest := map[string]string{}
	for n, script := range scripts {
		dir := e.path("life-" + n)
		args := []string{"image", "build", "-o", dir, "--ref", "local/life-" + n + ":1", "--busybox", "sh,echo,cat,sha256sum,cut,sleep"}
		if script == "" { // its command is not in the image: it never starts
			args = append(args, "--entrypoint", "/bin/not-here")
		} else {
			args = append(args, "--entrypoint", "/bin/sh", "--cmd", "-c", "--cmd", script)
		}
		e.must("launcher", args...)
		e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", dir)
		tarLayout(t, dir, dir+".tar")
		var ix struct {
			Manifests []struct{ Digest string } `json:"manifests"`
		}
		b, err := os.ReadFile(filepath.Join(dir, "index.json"))
		if err != nil || json.Unmarshal(b, &ix) != nil || len(ix.Manifests) != 1 {
			t.Fatalf("%s/index.json: %v %s", dir, err, b)
		}
		digest[n] = ix.Manifests[0].Digest
	}
	// The pod's policy allows all three images (signed); on_revoke is stop.
	polPath := e.path("attestd/policies/life.yaml")
	e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", e.path("life-a"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "life", "-o", polPath)
	pol, err := os.ReadFile(polPath)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(pol), "- "+digest["a"])
	if i < 0 {
		t.Fatalf("the policy does not list image a's digest as expected:\n%s", pol)
	}
	i += strings.IndexByte(string(pol[i:]), '\n') + 1
	all := string(pol[:i]) + "    - " + digest["b"] + "\n    - " + digest["bad"] + "\n    - " + digest["once"] + "\n" + string(pol[i:])
	if err := os.WriteFile(polPath, []byte(all), 0o600); err != nil {
		t.Fatal(err)
	}
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
	e.must("launcher", "image", "build", "-o", e.path("pause"), "--ref", "docker.io/local/pause:1", "--busybox", "sleep",
		"--entrypoint", "/bin/sleep", "--cmd", "3600")
	tarLayout(t, e.path("pause"), e.path("pause.tar"))
	sum := sha256.Sum256(e.secret)
	fingerprint := hex.EncodeToString(sum[:])

	d := e.startDaemon(t, "--reattest-interval", "2s")
	cri := e.startContainerd(t, true)
	imports := [][]string{{"-n", "k8s.io", "images", "import", e.path("pause.tar")}}
	for n := range scripts {
		imports = append(imports, []string{"-n", "k8s.io", "images", "import", e.path("life-" + n + ".tar")},
			[]string{"-n", "k8s.io", "images", "tag", "local/life-" + n + ":1", "docker.io/local/life-" + n + ":1"})
	}
	for _, args := range imports {
		if out, err := exec.Command("ctr", append([]string{"-a", cri.sock}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	crictl := cri.crictl
	var ctrConfigAs func(n, name string) string
	logs := func(id string) string {
		b, _ := exec.Command("crictl", "--runtime-endpoint", "unix://"+cri.sock, "logs", id).CombinedOutput()
		return string(b)
	}
	inspect := cri.inspect
	writeJSON := func(name string, v any) string {
		b, _ := json.Marshal(v)
		p := e.path(name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	podConfig := func(name string) string {
		return writeJSON(name+"-pod.json", map[string]any{
			"metadata": map[string]any{"name": name, "namespace": "default", "uid": name + "-uid"},
			"annotations": map[string]string{
				"bulwark.dev/policy": "life", "bulwark.dev/kernel": e.path("vmlinux"), "bulwark.dev/initrd": e.path("base.cpio"),
				"bulwark.dev/template": "none",
			},
			"log_directory": e.path(name + "-logs"),
			"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
		})
	}
	ctrConfig := func(n string) string { return ctrConfigAs(n, n) }
	ctrConfigAs = func(n, name string) string {
		sig, err := os.ReadFile(e.path("life-" + n + ".sig"))
		if err != nil {
			t.Fatal(err)
		}
		payload, err := os.ReadFile(e.path("life-" + n + ".payload.json"))
		if err != nil {
			t.Fatal(err)
		}
		return writeJSON(name+"-life.json", map[string]any{"metadata": map[string]any{"name": name},
			"image": map[string]any{"image": "docker.io/local/life-" + n + ":1"}, "log_path": n + ".log",
			"annotations": map[string]string{"bulwark.dev/image-signature": string(sig),
				"bulwark.dev/image-signature-payload": base64.StdEncoding.EncodeToString(payload)}})
	}
	start := func(t *testing.T, podID, podCfg, n string) (string, error) {
		t.Helper()
		out, err := crictl("create", podID, ctrConfig(n), podCfg)
		if err != nil {
			t.Fatal(err)
		}
		id := strings.TrimSpace(out)
		_, err = crictl("start", id)
		return id, err
	}

	t.Run("a pod whose first container does not start leaves no sandbox behind", func(t *testing.T) {
		cfg := podConfig("bad")
		out, err := crictl("runp", "--runtime", "bulwark", cfg)
		if err != nil {
			t.Fatal(err)
		}
		podID := strings.TrimSpace(out)
		defer func() { crictl("stopp", podID); crictl("rmp", podID) }()
		if _, err := start(t, podID, cfg, "bad"); err == nil || !strings.Contains(err.Error(), "not-here") {
			t.Fatalf("crictl start of a container whose command is not in its image: %v", err)
		}
		// The failed launch's record is removed before start answers: the
		// host service no longer says it runs then.
		if left := e.ps(t, true); len(left) != 0 {
			t.Fatalf("after the failed start the host service lists %+v, want nothing", left)
		}
	})
	if t.Failed() {
		return
	}

	cfg := podConfig("life")
	out, err := crictl("runp", "--runtime", "bulwark", cfg)
	if err != nil {
		t.Fatal(err)
	}
	podID := strings.TrimSpace(out)
	t.Cleanup(func() { crictl("stopp", podID); crictl("rmp", podID) })
	ids := map[string]string{}
	for _, n := range []string{"a", "b"} {
		if ids[n], err = start(t, podID, cfg, n); err != nil {
			t.Fatal(err)
		}
	}
	var sb psEntry
	for _, p := range e.ps(t, true) {
		sb = p
	}
	if sb.Status != "running" || sb.QEMUPID == 0 {
		t.Fatalf("the pod VM: %+v", sb)
	}
	e.killOnCleanup(t, sb.ID)
	for _, n := range []string{"a", "b"} {
		eventually(t, 180*time.Second, "container "+n+" reads the pod's secret", func() (bool, string) {
			l := logs(ids[n])
			return strings.Contains(l, n+" fingerprint "+fingerprint), l
		})
	}
	events := podEvents(t, e, sb.ID)
	eventually(t, 60*time.Second, "attestd keeps the pod's and b's launch events, allowed", func() (bool, string) {
		sbs := e.ctlSandboxes(t)
		out, _ := json.Marshal(sbs)
		return sbs[sb.ID].Verdict == "allow" && sbs[events["b"]].Verdict == "allow", string(out)
	})

	// once runs image "once" as container name in the pod to its end,
	// checks that it read the pod's secret, and removes it.
	once := func(t *testing.T, name string) {
		t.Helper()
		out, err := crictl("create", podID, ctrConfigAs("once", name), cfg)
		if err != nil {
			t.Fatal(err)
		}
		id := strings.TrimSpace(out)
		if _, err := crictl("start", id); err != nil {
			t.Fatalf("container %s: %v", name, err)
		}
		eventually(t, 120*time.Second, "container "+name+" exited", func() (bool, string) {
			st := inspect(t, id)
			return st.State == "CONTAINER_EXITED", logs(id)
		})
		if st, l := inspect(t, id), logs(id); st.ExitCode != 0 || !strings.Contains(l, "once "+fingerprint) {
			t.Fatalf("container %s: exit code %d, logs:\n%s", name, st.ExitCode, l)
		}
		if _, err := crictl("rm", id); err != nil {
			t.Fatalf("crictl rm %s: %v", name, err)
		}
		if out := e.must("launcher", "inspect", sb.ID); strings.Contains(out, id) {
			t.Fatalf("the host service still lists container %s after crictl rm:\n%s", name, out)
		}
	}

	t.Run("containers added and removed reuse the pod's image slots", func(t *testing.T) {
		// a runs from the pod's own disk, b holds slot 1: 14 slots are
		// free, and 16 containers come and go, as the kubelet restarts
		// them.
		for i := range 16 {
			once(t, "once-"+strconv.Itoa(i))
		}
	})
	if t.Failed() {
		return
	}

	t.Run("the host service killed with -9 and restarted takes the pod over", func(t *testing.T) {
		d.cmd.Process.Kill()
		<-d.exited
		if err := syscall.Kill(sb.QEMUPID, 0); err != nil {
			t.Fatalf("the pod's QEMU died with the host service: %v", err)
		}
		before := strings.Count(logs(ids["b"]), "b tick ")
		d = e.startDaemon(top, "--reattest-interval", "2s") // it outlives this subtest
		if got := e.ps(t, true)[sb.ID]; got.Status != "running" || got.QEMUPID != sb.QEMUPID || len(got.Secrets) != 1 {
			t.Fatalf("after the restart the pod is %+v, want running in QEMU %d with its secret", got, sb.QEMUPID)
		}
		for n, id := range ids {
			if st := inspect(t, id); st.State != "CONTAINER_RUNNING" {
				t.Errorf("container %s after the restart: %+v", n, st)
			}
		}
		eventually(t, 60*time.Second, "b's output goes on after the takeover", func() (bool, string) {
			l := logs(ids["b"])
			return strings.Count(l, "b tick ") > before+2, l
		})
		if out, err := crictl("exec", ids["b"], "sha256sum", "/run/secrets/db"); err != nil || !strings.HasPrefix(out, fingerprint) {
			t.Errorf("crictl exec in b after the takeover: %q %v", out, err)
		}
		// It takes new containers, as the service that launched it.
		once(t, "after-takeover")
		if _, lost := e.endRecords(t)[sb.ID]; lost {
			t.Errorf("the pod has an END record after the takeover: %v", e.endRecords(t))
		}
		// attestd hears from the new service: both events re-attested.
		since := time.Now()
		eventually(t, 60*time.Second, "re-attested by the new host service", func() (bool, string) {
			out := e.must("launcher", "inspect", sb.ID)
			var r struct {
				LastVerdict string    `json:"last_verdict"`
				At          time.Time `json:"last_verdict_at"`
			}
			json.Unmarshal([]byte(out), &r)
			return r.LastVerdict == "allow" && r.At.After(since), out
		})
	})
	if t.Failed() {
		return
	}

	t.Run("a policy that refuses only b's image revokes and stops the pod; the CRI says so", func(t *testing.T) {
		refuseB := strings.Replace(all, "    - "+digest["b"]+"\n", "", 1)
		if refuseB == all {
			t.Fatal("b's digest is not in the policy")
		}
		if err := os.WriteFile(polPath, []byte(refuseB), 0o600); err != nil {
			t.Fatal(err)
		}
		e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
		eventually(t, 120*time.Second, "both containers exited in the CRI", func() (bool, string) {
			a, b := inspect(t, ids["a"]), inspect(t, ids["b"])
			return a.State == "CONTAINER_EXITED" && b.State == "CONTAINER_EXITED", logs(ids["b"])
		})
		for n, id := range ids {
			if st := inspect(t, id); st.ExitCode == 0 {
				t.Errorf("container %s exited with 0 after the revocation", n)
			}
			if l := logs(id); !strings.Contains(l, "bulwark: the pod was revoked by attestd: container "+ids["b"]) {
				t.Errorf("container %s's logs do not say it was revoked for b's image:\n%s", n, l)
			}
		}
		out, err := crictl("inspectp", "-o", "json", podID)
		if err != nil || !strings.Contains(out, `"SANDBOX_NOTREADY"`) {
			t.Errorf("crictl inspectp after the revocation: %v\n%s", err, out)
		}
		// (The pause task's end makes containerd delete it, and the shim
		// then removes the pod's record from the host service.)
		waitGone(t, sb.QEMUPID)
		eventually(t, 30*time.Second, "END records: the pod and b revoked", func() (bool, string) {
			ends := e.endRecords(t)
			out, _ := json.Marshal(ends)
			return ends[sb.ID] == measure.EndRevoked && ends[events["b"]] == measure.EndRevoked, string(out)
		})
		if v := e.ctlSandboxes(t)[events["b"]].Verdict; v != "revoked" && v != "ended" {
			t.Errorf("attestd's verdict on b's event: %q, want revoked (or ended)", v)
		}
	})
}
