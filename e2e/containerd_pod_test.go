package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/measure"
)

// TestContainerdPodVM runs a CRI pod's containers in ONE measured VM
// through the real containerd, crictl, shim, host service and attestd:
// the pod's VM is a clone of a pod template (launcher template create
// --pod), and every container's launch event names the template; two
// containers run at once in the pod's one QEMU, each in its own image
// and root (each sees a file only its image has, not the other's), both
// reading the pod's secret; crictl exec runs in the second one's root,
// with piped stdin (-i) and on a terminal (-it, testCrictlExecInteractive);
// an exec'd process is signalled (crictl exec --timeout, ctr tasks kill
// --exec-id: testCrictlExecTimeout, testCtrExecKill);
// the second exits with its own code while the first runs on; a third
// container whose image the pod's policy does not allow fails its start
// with the policy's reasons and nothing of it runs, and uses up no image
// slot: the next container gets the slot it would have had; every container's
// launch event gets its END record; stopp/rmp leave no QEMU, shim,
// sandbox or mount behind.
func TestContainerdPodVM(t *testing.T) {
	needContainerd(t, true)
	e := setup(t)
	buildShim(t)
	// Three images, each with a file only it has: a (runs on), b (exits 3
	// once told to), c (its image is not in the pod's policy).
	scripts := map[string]string{
		"a": `echo "a: $(cat /only-a) sees-b: $(test -e /only-b && echo yes || echo no)"; echo "a fingerprint $(sha256sum /run/secrets/db | cut -d' ' -f1)"; exec sleep 3600`,
		"b": `echo "b: $(cat /only-b) sees-a: $(test -e /only-a && echo yes || echo no)"; echo "b fingerprint $(sha256sum /run/secrets/db | cut -d' ' -f1)"; while ! test -e /tmp/stop; do sleep 1; done; exit 3`,
		"c": `echo "c ran"; exec sleep 3600`,
	}
	digest := map[string]string{}
	for _, n := range []string{"a", "b", "c"} {
		files := e.path("files-" + n)
		if err := os.MkdirAll(files, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(files, "only-"+n), []byte(n+"-only\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		dir := e.path("pod-" + n)
		e.must("launcher", "image", "build", "-o", dir, "--ref", "local/pod-"+n+":1", "--layer", files,
			"--busybox", "sh,echo,cat,sha256sum,cut,sleep,test,touch,tty,stty", "--entrypoint", "/bin/sh", "--cmd", "-c", "--cmd", scripts[n])
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
	// The pod's policy allows a and b (signed), not c.
	e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", e.path("pod-a"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "pod",
		"-o", e.path("attestd/policies/pod.yaml"))
	pol, err := os.ReadFile(e.path("attestd/policies/pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(pol), "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "- "+digest["a"]) {
			lines = append(lines[:i+1], append([]string{"    - " + digest["b"]}, lines[i+1:]...)...)
			break
		}
	}
	if len(lines) == len(strings.Split(string(pol), "\n")) {
		t.Fatalf("the policy does not list image a's digest as expected:\n%s", pol)
	}
	pol = []byte(strings.Join(lines, "\n"))
	if err := os.WriteFile(e.path("attestd/policies/pod.yaml"), pol, 0o600); err != nil {
		t.Fatal(err)
	}
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
	e.must("launcher", "image", "build", "-o", e.path("pause"), "--ref", "docker.io/local/pause:1", "--busybox", "sleep",
		"--entrypoint", "/bin/sleep", "--cmd", "3600")
	tarLayout(t, e.path("pause"), e.path("pause.tar"))
	if out := e.must("launcher", "template", "create", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"), "--name", "pods", "--pod"); !strings.Contains(out, "pod VMs (15 image slots)") {
		t.Fatalf("template create --pod: %s", out)
	}
	sum := sha256.Sum256(e.secret)
	fingerprint := hex.EncodeToString(sum[:])

	e.startDaemon(t)
	cri := e.startContainerd(t, true)
	imports := [][]string{{"-n", "k8s.io", "images", "import", e.path("pause.tar")}}
	for _, n := range []string{"a", "b", "c"} {
		imports = append(imports, []string{"-n", "k8s.io", "images", "import", e.path("pod-" + n + ".tar")},
			[]string{"-n", "k8s.io", "images", "tag", "local/pod-" + n + ":1", "docker.io/local/pod-" + n + ":1"})
	}
	for _, args := range imports {
		c := exec.Command("ctr", append([]string{"-a", cri.sock}, args...)...)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	crictl := cri.crictl
	inspect := cri.inspect
	logs := func(id string) string {
		b, _ := exec.Command("crictl", "--runtime-endpoint", "unix://"+cri.sock, "logs", id).CombinedOutput()
		return string(b)
	}
	// waitFor asks until cond holds (the guest runs under TCG: slow).
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

	pod := map[string]any{
		"metadata": map[string]any{"name": "duo", "namespace": "default", "uid": "duo-uid"},
		"annotations": map[string]string{
			"bulwark.dev/policy": "pod", "bulwark.dev/kernel": e.path("vmlinux"), "bulwark.dev/initrd": e.path("base.cpio"),
		},
		"log_directory": e.path("duo-logs"),
		"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
	}
	files := map[string]any{"duo-pod.json": pod}
	for _, n := range []string{"a", "b", "c", "d"} {
		img := n
		if n == "d" { // d: b's image again, after c's refusal
			img = "b"
		}
		sig, err := os.ReadFile(e.path("pod-" + img + ".sig"))
		if err != nil {
			t.Fatal(err)
		}
		payload, err := os.ReadFile(e.path("pod-" + img + ".payload.json"))
		if err != nil {
			t.Fatal(err)
		}
		// Each container's own signature: container annotations pass
		// after the pod's.
		files[n+"-container.json"] = map[string]any{"metadata": map[string]any{"name": n},
			"image": map[string]any{"image": "docker.io/local/pod-" + img + ":1"}, "log_path": n + ".log",
			"annotations": map[string]string{"bulwark.dev/image-signature": string(sig),
				"bulwark.dev/image-signature-payload": base64.StdEncoding.EncodeToString(payload)}}
	}
	for name, v := range files {
		b, _ := json.Marshal(v)
		if err := os.WriteFile(e.path(name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := crictl("runp", "--runtime", "bulwark", e.path("duo-pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	podID := strings.TrimSpace(out)
	t.Cleanup(func() { crictl("stopp", podID); crictl("rmp", podID) })
	// The pod alone boots nothing.
	if sbs := e.ps(t, true); len(sbs) != 0 {
		t.Fatalf("after runp the host service lists %+v, want nothing before a container starts", sbs)
	}
	ids := map[string]string{}
	for _, n := range []string{"a", "b"} {
		out, err := crictl("create", podID, e.path(n+"-container.json"), e.path("duo-pod.json"))
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
	if len(sbs) != 1 || sb.Status != "running" || sb.QEMUPID == 0 || len(sb.Secrets) != 1 || sb.Template != "pods" {
		t.Fatalf("the host service's sandboxes: %+v, want the pod's one VM, a clone of template pods, running with its secret", sbs)
	}
	e.killOnCleanup(t, sb.ID)
	// One QEMU for the pod, and it is both containers' process.
	if q := qemusOf(sb.ID); len(q) != 1 || q[0] != sb.QEMUPID {
		t.Errorf("QEMUs of the pod: %v, want just %d", q, sb.QEMUPID)
	}
	for n, id := range ids {
		if st := inspect(t, id); st.State != "CONTAINER_RUNNING" || st.Pid != sb.QEMUPID {
			t.Errorf("container %s: %+v, want running in the pod's QEMU %d", n, st, sb.QEMUPID)
		}
	}
	// Each in its own root, both with the pod's secret.
	for n, want := range map[string][]string{
		"a": {"a: a-only sees-b: no", "a fingerprint " + fingerprint},
		"b": {"b: b-only sees-a: no", "b fingerprint " + fingerprint},
	} {
		waitFor(t, "container "+n+"'s output", func() bool { return strings.Contains(logs(ids[n]), want[1]) })
		if l := logs(ids[n]); !strings.Contains(l, want[0]) {
			t.Errorf("container %s's logs:\n%s\nwant %q", n, l, want[0])
		}
	}
	// crictl exec runs in the second container's root.
	out, err = crictl("exec", ids["b"], "cat", "/only-b")
	if err != nil || strings.TrimSpace(out) != "b-only" {
		t.Errorf("crictl exec b cat /only-b: %q, %v", out, err)
	}
	if out, err := crictl("exec", ids["b"], "cat", "/only-a"); err == nil {
		t.Errorf("crictl exec b cat /only-a: %q, want no such file in b's root", out)
	}
	// Interactive: stdin (-i) and a terminal (-t).
	testCrictlExecInteractive(t, cri, ids["b"])
	// Signals for exec'd processes: crictl exec --sync --timeout, ctr tasks kill
	// --exec-id.
	testCrictlExecTimeout(t, cri, ids["b"])
	testCtrExecKill(t, cri, "k8s.io", ids["b"])
	// (Read while b runs: once it exits, containerd deletes its task and
	// the host service forgets it, freeing its image slot.)
	events := podEvents(t, e, sb.ID)
	// b exits with its code; a and the VM run on.
	if _, err := crictl("exec", ids["b"], "touch", "/tmp/stop"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "container b's exit", func() bool { return inspect(t, ids["b"]).State == "CONTAINER_EXITED" })
	if st := inspect(t, ids["b"]); st.ExitCode != 3 {
		t.Errorf("container b exited with %d, want its 3", st.ExitCode)
	}
	if st := inspect(t, ids["a"]); st.State != "CONTAINER_RUNNING" {
		t.Errorf("container a after b's exit: %+v, want running", st)
	}
	if q := qemusOf(sb.ID); len(q) != 1 {
		t.Errorf("the pod's QEMU after b's exit: %v", q)
	}
	waitFor(t, "b's END record", func() bool { return e.endRecords(t)[events["b"]] == measure.EndExited })

	// c's image is not in the pod's policy: its start fails with the
	// policy's reasons; nothing of it runs.
	out, err = crictl("create", podID, e.path("c-container.json"), e.path("duo-pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	ids["c"] = strings.TrimSpace(out)
	_, err = crictl("start", ids["c"])
	if err == nil || !strings.Contains(err.Error(), `denied by policy "pod"`) || !strings.Contains(err.Error(), "image: manifest "+digest["c"]+" not allowed") {
		t.Fatalf("crictl start of a container the pod's policy refuses: %v, want the policy's reasons", err)
	}
	if st := inspect(t, ids["c"]); st.State == "CONTAINER_RUNNING" {
		t.Errorf("the refused container: %+v", st)
	}
	if l := logs(ids["c"]); strings.Contains(l, "c ran") {
		t.Errorf("the refused container ran: %s", l)
	}
	if st := inspect(t, ids["a"]); st.State != "CONTAINER_RUNNING" {
		t.Errorf("container a after c's refusal: %+v, want running", st)
	}
	// c's launch event was recorded, judged, refused: it has its END.
	ends := e.endRecords(t)
	lg, err := measure.ReadLogFile(filepath.Join(e.state, "launch", "launch.cel"))
	if err != nil {
		t.Fatal(err)
	}
	var cEvent string
	for _, r := range lg.Records() {
		if r.Event != nil && r.Event.SandboxID != sb.ID && r.Event.SandboxID != events["b"] {
			cEvent = r.Event.SandboxID
		}
	}
	if _, podEnded := ends[sb.ID]; cEvent == "" || ends[cEvent] != measure.EndFailed || podEnded {
		t.Errorf("END records %v: want c's event %q failed, the pod's %s none yet", ends, cEvent, sb.ID)
	}
	// Every container's event names the template the pod's VM resumed
	// from, as the pod's does (policy judges them as clones).
	var tplRecipe string
	for _, r := range lg.Records() {
		if r.Event == nil {
			continue
		}
		if r.Event.SandboxID == sb.ID {
			tplRecipe = r.Event.TemplateRecipe
		}
		if !r.Event.Cloned() || r.Event.TemplateRecipe == "" {
			t.Errorf("launch event %s does not name the pod's template", r.Event.SandboxID)
		}
	}
	if tplRecipe == "" {
		t.Error("the pod's launch event names no template recipe")
	}
	// c used up no image slot, and b's was freed when it exited (containerd
	// deleted its task, and the host service forgot it): d, allowed, gets
	// slot 1 again, a new disk in it.
	out, err = crictl("create", podID, e.path("d-container.json"), e.path("duo-pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	ids["d"] = strings.TrimSpace(out)
	if _, err := crictl("start", ids["d"]); err != nil {
		t.Fatalf("crictl start of an allowed container after a refused one: %v", err)
	}
	waitFor(t, "container d's output", func() bool { return strings.Contains(logs(ids["d"]), "b fingerprint "+fingerprint) })
	if got := containerIndexes(t, e, sb.ID); len(got) != 2 || got[ids["a"]] != 0 || got[ids["d"]] != 1 {
		t.Errorf("image slots of the pod's containers: %v, want a's 0 and d's 1 (b's, freed; the refused c took none), b and c forgotten", got)
	}

	// stopp/rmp: nothing is left, and every launch event has its END.
	for _, args := range [][]string{{"stopp", podID}, {"rmp", podID}} {
		if _, err := crictl(args...); err != nil {
			t.Fatal(err)
		}
	}
	waitGone(t, sb.QEMUPID)
	if left := e.ps(t, true); len(left) != 0 {
		t.Errorf("the host service still lists %d sandboxes: %+v", len(left), left)
	}
	waitFor(t, "the pod's shim to exit", func() bool { return len(cri.shims()) == 0 })
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err != nil || strings.Contains(string(mi), cri.dir) {
		t.Errorf("mounts under containerd's directory are left: %v\n%s", err, mi)
	}
	lg, err = measure.ReadLogFile(filepath.Join(e.state, "launch", "launch.cel"))
	if err != nil {
		t.Fatal(err)
	}
	ends = e.endRecords(t)
	for _, r := range lg.Records() {
		if r.Event != nil && ends[r.Event.SandboxID] == "" {
			t.Errorf("launch event %s has no END record after rmp", r.Event.SandboxID)
		}
	}
	if ends[sb.ID] != measure.EndStopped {
		t.Errorf("END records %v: want the pod %s stopped", ends, sb.ID)
	}
}

// qemusOf lists the QEMU processes of sandbox id (its name is on their
// command line).
func qemusOf(id string) []int {
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cmd := string(b)
		if strings.Contains(cmd, "qemu-system") && strings.Contains(cmd, "bulwark-"+id) {
			var pid int
			fmt.Sscan(filepath.Base(filepath.Dir(p)), &pid)
			out = append(out, pid)
		}
	}
	return out
}

// podEvents reads the pod's record: its containers' launch event ids, in
// the order they were added, keyed a, b, ... (the first container's is
// the pod's own).
func podEvents(t *testing.T, e *env, id string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.state, "sandboxes", id, "sandbox.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Containers []struct {
			Name    string `json:"name"`
			Image   string `json:"image"`
			EventID string `json:"eventId"`
		} `json:"containers"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for i, c := range r.Containers {
		m[string(rune('a'+i))] = c.EventID
	}
	if len(m) < 2 || m["a"] != id || m["b"] == "" || m["b"] == id {
		t.Fatalf("the pod's containers %+v: want a's event the pod's, b's its own", r.Containers)
	}
	return m
}

// containerIndexes reads the pod's record: the image slot index of each
// container it lists (-1 for one that never started), by name (the CRI's
// container id).
func containerIndexes(t *testing.T, e *env, id string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.state, "sandboxes", id, "sandbox.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Containers []struct {
			Name  string `json:"name"`
			Index int    `json:"index"`
		} `json:"containers"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, c := range r.Containers {
		m[c.Name] = c.Index
	}
	return m
}
