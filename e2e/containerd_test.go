package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/measure"
	"github.com/containerd/containerd/namespaces"
	containerdshim "github.com/containerd/containerd/runtime/v2/shim"
)

// containerd is a running containerd whose state is all under a test's
// temporary directory.
type containerd struct {
	dir, sock string
	log       *syncBuffer
}

// startContainerd starts containerd with the shim's directory on its PATH
// and the env's state directory (so the shim finds the host service); it
// is stopped when t ends.
func (e *env) startContainerd(t *testing.T, cri bool) *containerd {
	t.Helper()
	dir := e.path("containerd")
	if cri {
		dir = e.path("containerd-cri")
	}
	return e.startContainerdIn(t, dir, cri)
}

// startContainerdIn is startContainerd with its directory given, and env
// added to containerd's environment (the shims inherit it). With the CRI,
// pods with their own network get it from the CNI plugins in /usr/lib/cni
// (Debian's containernetworking-plugins) and the conflists the test writes
// to DIR/cni.
func (e *env) startContainerdIn(t testing.TB, dir string, cri bool, env ...string) *containerd {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cd := &containerd{dir: dir, sock: filepath.Join(dir, "containerd.sock"), log: &syncBuffer{}}
	// containerd 2.x reads config version 3; 1.x (Debian's 1.6) version 2.
	version := "3"
	if containerdMajor(t) == 1 {
		version = "2"
	}
	disabled := "'io.containerd.grpc.v1.cri', 'io.containerd.nri.v1.nri'"
	if cri {
		disabled = "'io.containerd.nri.v1.nri'"
	}
	cfg := "version = " + version + "\n" +
		"root = '" + dir + "/root'\nstate = '" + dir + "/state'\n" +
		"disabled_plugins = [" + disabled + "]\n" +
		"[grpc]\n  address = '" + cd.sock + "'\n" +
		"[ttrpc]\n  address = '" + cd.sock + ".ttrpc'\n" +
		"[plugins.'io.containerd.internal.v1.opt']\n  path = '" + dir + "/opt'\n"
	if cri { // containerd 2.x's CRI: the bulwark handler; CNI from /usr/lib/cni, conflists in DIR/cni
		cfg += "[plugins.'io.containerd.cri.v1.images']\n  snapshotter = 'overlayfs'\n" +
			"  [plugins.'io.containerd.cri.v1.images'.pinned_images]\n    sandbox = 'docker.io/local/pause:1'\n" +
			"[plugins.'io.containerd.cri.v1.runtime']\n  restrict_oom_score_adj = true\n" +
			"  [plugins.'io.containerd.cri.v1.runtime'.cni]\n    bin_dirs = ['/usr/lib/cni']\n    conf_dir = '" + dir + "/cni'\n" +
			"  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.bulwark]\n    runtime_type = 'io.containerd.bulwark.v2'\n" +
			"    pod_annotations = ['bulwark.dev/*']\n    container_annotations = ['bulwark.dev/*']\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command(bin, "--config", filepath.Join(dir, "config.toml"))
	// The shims inherit containerd's environment: the guest files the
	// test's containers name are in its directory.
	c.Env = append(os.Environ(), "BULWARK_STATE="+e.state, "PATH="+bins+string(os.PathListSeparator)+os.Getenv("PATH"),
		"BULWARK_GUEST_DIRS="+e.dir)
	c.Env = append(c.Env, env...)
	pr, pw := io.Pipe()
	c.Stdout, c.Stderr = pw, pw
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			cd.log.WriteString(sc.Text() + "\n")
		}
		io.Copy(io.Discard, pr)
	}()
	go func() { c.Wait(); pw.Close(); close(exited) }()
	t.Cleanup(func() {
		c.Process.Signal(syscall.SIGTERM)
		<-exited
		if t.Failed() {
			t.Logf("containerd log:\n%s", cd.log.String())
			// A shim outlives containerd on purpose (a restart finds it
			// again); after a failed test nothing may stay behind.
			for pid := range cd.shims() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	// containerd serves within a second: ask until it answers.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := cd.ctr("version").CombinedOutput()
		if err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("containerd exited before serving:\n%s", cd.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not serve in 30 s: %v\n%s\n%s", err, out, cd.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return cd
}

// needContainerd skips a test without containerd and ctr (and, for the
// CRI, crictl and containerd 2.x, whose CRI config the tests write).
func needContainerd(t testing.TB, cri bool) {
	t.Helper()
	tools := []string{"containerd", "ctr"}
	if cri {
		tools = append(tools, "crictl")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: run scripts/install-containerd.sh (make tools)", tool)
		}
	}
	if cri && containerdMajor(t) < 2 {
		t.Skip("the CRI config here is containerd 2.x's")
	}
}

// buildShim builds containerd-shim-bulwark-v2 into the binaries' directory,
// which containerd finds on its PATH.
func buildShim(t testing.TB) {
	t.Helper()
	build := exec.Command("go", "build", "-o", bins+"/", "../cmd/containerd-shim-bulwark-v2")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the shim: %v\n%s", err, out)
	}
}

// containerdMajor is the major version of the containerd on PATH.
func containerdMajor(t testing.TB) int {
	t.Helper()
	out, err := exec.Command("containerd", "--version").Output()
	if err != nil {
		t.Fatalf("containerd --version: %v", err)
	}
	// "containerd github.com/containerd/containerd[/v2] 2.4.2+unknown ..."
	f := strings.Fields(string(out))
	if len(f) < 3 {
		t.Fatalf("containerd --version: %q", out)
	}
	var major int
	fmt.Sscanf(strings.TrimPrefix(f[2], "v"), "%d", &major)
	return major
}

// ctr runs ctr against cd in the namespace "bulwark"; its stdin is a real
// pipe, closed (ctr copies stdin into the task's fifo).
func (cd *containerd) ctr(args ...string) *exec.Cmd {
	c := exec.Command("ctr", append([]string{"-a", cd.sock, "-n", "bulwark"}, args...)...)
	if r, w, err := os.Pipe(); err == nil {
		w.Close()
		c.Stdin = r
	}
	return c
}

// crictl runs crictl against this containerd's CRI.
func (cd *containerd) crictl(args ...string) (string, error) {
	c := exec.Command("crictl", append([]string{"--runtime-endpoint", "unix://" + cd.sock, "--image-endpoint", "unix://" + cd.sock, "--timeout", "300s"}, args...)...)
	var so, se bytes.Buffer
	c.Stdout, c.Stderr = &so, &se
	if err := c.Run(); err != nil {
		return so.String(), fmt.Errorf("crictl %s: %w\n%s%s", strings.Join(args, " "), err, so.String(), se.String())
	}
	return so.String(), nil
}

// criContainer is what 'crictl inspect' says of a container.
type criContainer struct {
	State    string
	ExitCode int
	Pid      int
}

// inspect reads container id's state, exit code and pid through crictl.
func (cd *containerd) inspect(t *testing.T, id string) criContainer {
	t.Helper()
	out, err := cd.crictl("inspect", "-o", "json", id)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Status struct {
			State    string `json:"state"`
			ExitCode int    `json:"exitCode"`
		} `json:"status"`
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("crictl inspect: %v\n%s", err, out)
	}
	return criContainer{st.Status.State, st.Status.ExitCode, st.Info.Pid}
}

// killAndRemove kills the running container name (ctr tasks kill: SIGTERM),
// waits for its task to stop and its sandbox sb to end with wantCode and
// its QEMU to be gone, then removes the task and the container.
func (e *env) killAndRemove(t *testing.T, cd *containerd, name string, sb psEntry, wantCode int) {
	t.Helper()
	if out, err := cd.ctr("tasks", "kill", name).CombinedOutput(); err != nil {
		t.Fatalf("ctr tasks kill: %v\n%s", err, out)
	}
	// Kill returns at once; the task stops within the grace period.
	deadline := time.Now().Add(60 * time.Second)
	for {
		tasks, _ := cd.ctr("tasks", "ls").Output()
		if strings.Contains(string(tasks), "STOPPED") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task did not stop within 60 s of kill:\n%s", tasks)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := e.ps(t, true)[sb.ID]; got.Status != "exited" || got.ExitCode != wantCode {
		t.Errorf("the sandbox after kill: %+v, want exited with %d", got, wantCode)
	}
	waitGone(t, sb.QEMUPID)
	for _, args := range [][]string{{"tasks", "rm", name}, {"containers", "rm", name}} {
		if out, err := cd.ctr(args...).CombinedOutput(); err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// shims lists the bulwark shims serving cd: pid -> command line.
func (cd *containerd) shims() map[int]string {
	out := map[int]string{}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, "containerd-shim-bulwark-v2") && strings.Contains(cmd, cd.sock) {
			var pid int
			fmt.Sscan(filepath.Base(filepath.Dir(p)), &pid)
			out[pid] = cmd
		}
	}
	return out
}

// tarLayout writes the OCI layout dir as an OCI archive.
func tarLayout(t testing.TB, dir, archive string) {
	t.Helper()
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// containerd runs a container in a measured Bulwark VM through the real
// binaries (containerd, ctr, containerd-shim-bulwark-v2, launcher daemon,
// attestd): the image is taken from containerd's content store, the
// workload's output (with its released secret) reaches ctr, and its exit
// code is ctr's; a policy that refuses the image fails the run with the
// policy's reasons; an image modified in the content store after import is
// refused before anything boots. Nothing is left behind in the host
// service.
func TestContainerdShim(t *testing.T) {
	needContainerd(t, false)
	e := setup(t)
	buildShim(t)
	e.must("launcher", "image", "build", "-o", e.path("ctr-image"), "--ref", "local/hello:1", "--busybox", "sh,echo,cat,sha256sum,cut,ls",
		"--entrypoint", "/bin/sh", "--cmd", "-c",
		"--cmd", `echo "secrets: $(ls /run/secrets)"; echo "fingerprint $(sha256sum /run/secrets/db | cut -d' ' -f1)"; echo oops >&2; exit 7`)
	e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", e.path("ctr-image"))
	e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", e.path("ctr-image"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "ctr",
		"-o", e.path("attestd/policies/ctr.yaml"))
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
	tarLayout(t, e.path("ctr-image"), e.path("ctr-image.tar"))
	sig, err := os.ReadFile(e.path("ctr-image.sig"))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := os.ReadFile(e.path("ctr-image.payload.json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(e.secret)
	fingerprint := "fingerprint " + hex.EncodeToString(sum[:])

	e.startDaemon(t)
	cd := e.startContainerd(t, false)
	if out, err := cd.ctr("images", "import", e.path("ctr-image.tar")).CombinedOutput(); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	// run is 'ctr run --rm' of the hello image with the annotations the
	// shim needs; unsigned leaves the signature out.
	run := func(t *testing.T, name, policy string, unsigned bool) (stdout, stderr string, code int) {
		t.Helper()
		args := []string{"run", "--rm", "--runtime", "io.containerd.bulwark.v2",
			"--annotation", "bulwark.dev/policy=" + policy,
			"--annotation", "bulwark.dev/kernel=" + e.path("vmlinux"),
			"--annotation", "bulwark.dev/initrd=" + e.path("base.cpio"),
			"--annotation", "bulwark.dev/template=none"}
		if !unsigned {
			args = append(args, "--annotation", "bulwark.dev/image-signature="+string(sig),
				"--annotation", "bulwark.dev/image-signature-payload="+base64.StdEncoding.EncodeToString(payload))
		}
		c := cd.ctr(append(args, "local/hello:1", name)...)
		var so, se bytes.Buffer
		c.Stdout, c.Stderr = &so, &se
		err := c.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return so.String(), se.String(), code
	}
	// The host service keeps nothing of a container ctr removed.
	noSandboxes := func(t *testing.T) {
		t.Helper()
		if left := e.ps(t, true); len(left) != 0 {
			t.Errorf("the host service still lists %d sandboxes: %+v", len(left), left)
		}
		if out, err := cd.ctr("containers", "ls", "-q").Output(); err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("containerd still lists containers: %v %q", err, out)
		}
		// The container's shim exits once containerd shut it down.
		deadline := time.Now().Add(30 * time.Second)
		for {
			left := cd.shims()
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("shims still run 30 s after their containers were removed: %v", left)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	t.Run("ctr run prints the workload's output from the measured VM", func(t *testing.T) {
		so, se, code := run(t, "hello", "ctr", false)
		if code != 7 {
			t.Fatalf("ctr run: exit %d, want the workload's 7\nstdout:\n%s\nstderr:\n%s", code, so, se)
		}
		if !strings.Contains(so, "secrets: db\n") || !strings.Contains(so, fingerprint+"\n") {
			t.Errorf("stdout of ctr run:\n%s\nwant the secret's name and fingerprint %s", so, fingerprint)
		}
		if strings.Contains(so, "oops") || !strings.Contains(se, "oops") {
			t.Errorf("the workload's stderr: stdout %q, stderr %q", so, se)
		}
		noSandboxes(t)
	})

	t.Run("a refused launch fails the run with the policy's reasons", func(t *testing.T) {
		for _, tc := range []struct {
			name, policy string
			unsigned     bool
			want         []string
		}{
			{"another image's policy", "other", false, []string{`policy "other" does not allow it`, "image: "}},
			{"no image signature", "ctr", true, []string{`policy "ctr" does not allow it`, "image: "}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				so, se, code := run(t, "refused", tc.policy, tc.unsigned)
				for _, w := range tc.want {
					if code == 0 || !strings.Contains(se, w) {
						t.Fatalf("ctr run: exit %d, want a failure with %q\nstdout:\n%s\nstderr:\n%s", code, w, so, se)
					}
				}
				if strings.Contains(so, "fingerprint") {
					t.Errorf("a refused workload ran:\n%s", so)
				}
				noSandboxes(t)
			})
		}
	})

	var runDetached func(t *testing.T, name string) psEntry // set by the next subtest
	t.Run("a detached container: exec beside it, kill ends it", func(t *testing.T) {
		e.must("launcher", "image", "build", "-o", e.path("ctr-loop"), "--ref", "local/loop:1", "--busybox", "sh,echo,cat,sha256sum,cut,sleep",
			"--entrypoint", "/bin/sh", "--cmd", "-c", "--cmd", `i=0; while :; do echo "tick $i"; i=$((i+1)); sleep 1; done`)
		e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", e.path("ctr-loop"))
		e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
			"--image", e.path("ctr-loop"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "ctrloop",
			"-o", e.path("attestd/policies/ctrloop.yaml"))
		e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
		tarLayout(t, e.path("ctr-loop"), e.path("ctr-loop.tar"))
		if out, err := cd.ctr("images", "import", e.path("ctr-loop.tar")).CombinedOutput(); err != nil {
			t.Fatalf("ctr images import: %v\n%s", err, out)
		}
		lsig, err := os.ReadFile(e.path("ctr-loop.sig"))
		if err != nil {
			t.Fatal(err)
		}
		lpayload, err := os.ReadFile(e.path("ctr-loop.payload.json"))
		if err != nil {
			t.Fatal(err)
		}
		runDetached = func(t *testing.T, name string) psEntry {
			t.Helper()
			if out, err := cd.ctr("run", "-d", "--runtime", "io.containerd.bulwark.v2",
				"--annotation", "bulwark.dev/policy=ctrloop",
				"--annotation", "bulwark.dev/kernel="+e.path("vmlinux"),
				"--annotation", "bulwark.dev/initrd="+e.path("base.cpio"),
				"--annotation", "bulwark.dev/template=none",
				"--annotation", "bulwark.dev/image-signature="+string(lsig),
				"--annotation", "bulwark.dev/image-signature-payload="+base64.StdEncoding.EncodeToString(lpayload),
				"local/loop:1", name).CombinedOutput(); err != nil {
				t.Fatalf("ctr run -d: %v\n%s", err, out)
			}
			// The task runs (as the sandbox's QEMU), and the host
			// service has its sandbox.
			var sb psEntry
			for _, p := range e.ps(t, false) {
				sb = p
			}
			if sb.Status != "running" || sb.Policy != "ctrloop" || sb.QEMUPID == 0 {
				t.Fatalf("the host service's sandbox: %+v", sb)
			}
			return sb
		}
		sb := runDetached(t, "loop")
		tasks, err := cd.ctr("tasks", "ls").Output()
		if err != nil || !strings.Contains(string(tasks), "RUNNING") || !strings.Contains(string(tasks), fmt.Sprint(sb.QEMUPID)) {
			t.Fatalf("ctr tasks ls: %v\n%s", err, tasks)
		}

		c := cd.ctr("tasks", "exec", "--exec-id", "e1", "loop", "sh", "-c", `echo "fingerprint $(sha256sum /run/secrets/db | cut -d' ' -f1)"; echo oops >&2; exit 5`)
		var so, se bytes.Buffer
		c.Stdout, c.Stderr = &so, &se
		err = c.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 5 {
			t.Fatalf("ctr tasks exec: %v, want exit code 5\nstdout:\n%s\nstderr:\n%s", err, so.String(), se.String())
		}
		if strings.TrimSpace(so.String()) != fingerprint || !strings.Contains(se.String(), "oops") {
			t.Errorf("ctr tasks exec: stdout %q, stderr %q", so.String(), se.String())
		}

		// An exec'd process beside a sandbox's workload is signalled.
		testCtrExecKill(t, cd, "bulwark", "loop")

		// ctr tasks metrics asks the shim for Stats: the sandbox's QEMU
		// cgroup, in the form containerd reads from runc's shim.
		mj, err := cd.ctr("tasks", "metrics", "--format", "json", "loop").Output()
		if err != nil {
			t.Fatalf("ctr tasks metrics: %v\n%s", err, mj)
		}
		var met struct {
			Memory struct {
				Usage json.RawMessage `json:"usage"` // v1: {"usage":N,"limit":N}; v2: N
			} `json:"memory"`
			CPU struct {
				Usage     struct{ Total uint64 } `json:"usage"` // v1, ns
				UsageUsec uint64                 `json:"usage_usec"`
			} `json:"cpu"`
			Pids struct{ Current uint64 } `json:"pids"`
		}
		if err := json.Unmarshal(mj, &met); err != nil {
			t.Fatalf("ctr tasks metrics: %v\n%s", err, mj)
		}
		var memV1 struct{ Usage, Limit uint64 }
		var memV2 uint64
		if json.Unmarshal(met.Memory.Usage, &memV1) != nil {
			json.Unmarshal(met.Memory.Usage, &memV2)
		}
		if memV1.Usage+memV2 < 16<<20 || met.CPU.Usage.Total+met.CPU.UsageUsec == 0 || met.Pids.Current == 0 {
			t.Errorf("ctr tasks metrics: want a running VM's memory (≥ 16 MiB), CPU time and threads:\n%s", mj)
		}
		if memV1.Limit != 0 && memV1.Limit < memV1.Usage {
			t.Errorf("ctr tasks metrics: usage above the limit:\n%s", mj)
		}

		e.killAndRemove(t, cd, "loop", sb, 143)
		noSandboxes(t)
	})

	t.Run("a shim killed with -9: containerd's cleanup removes its sandbox", func(t *testing.T) {
		if runDetached == nil {
			t.Skip("needs the detached container's image")
		}
		sb := runDetached(t, "orphan")
		addr, err := containerdshim.SocketAddress(namespaces.WithNamespace(context.Background(), "bulwark"), cd.sock, "orphan")
		if err != nil {
			t.Fatal(err)
		}
		sock := strings.TrimPrefix(addr, "unix://")
		if _, err := os.Stat(sock); err != nil {
			t.Fatalf("the shim's socket: %v", err)
		}
		shims := cd.shims()
		if len(shims) != 1 {
			t.Fatalf("want one shim, found %v", shims)
		}
		for pid := range shims {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		// containerd notices the shim's end and runs its delete command,
		// which removes the sandbox the bundle records.
		deadline := time.Now().Add(60 * time.Second)
		for len(e.ps(t, true)) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the sandbox of a killed shim is still there 60 s later: %+v", e.ps(t, true))
			}
			time.Sleep(200 * time.Millisecond)
		}
		waitGone(t, sb.QEMUPID)
		// The dead shim's socket goes too.
		if _, err := os.Stat(sock); !os.IsNotExist(err) {
			t.Errorf("the killed shim's socket %s is still there: %v", sock, err)
		}
		cd.ctr("tasks", "rm", "orphan").Run() // containerd may have deleted it already
		if out, err := cd.ctr("containers", "rm", "orphan").CombinedOutput(); err != nil {
			t.Fatalf("ctr containers rm: %v\n%s", err, out)
		}
		noSandboxes(t)
	})

	t.Run("crictl runs a pod whose container is a measured VM", func(t *testing.T) {
		needContainerd(t, true)
		cri := e.startContainerd(t, true)
		// The pod's sandbox ("pause") image: containerd's CRI needs one,
		// the shim never runs it.
		e.must("launcher", "image", "build", "-o", e.path("pause"), "--ref", "docker.io/local/pause:1", "--busybox", "sleep",
			"--entrypoint", "/bin/sleep", "--cmd", "3600")
		tarLayout(t, e.path("pause"), e.path("pause.tar"))
		for _, args := range [][]string{
			{"-n", "k8s.io", "images", "import", e.path("pause.tar")},
			{"-n", "k8s.io", "images", "import", e.path("ctr-image.tar")},
			{"-n", "k8s.io", "images", "tag", "local/hello:1", "docker.io/local/hello:1"},
		} {
			c := exec.Command("ctr", append([]string{"-a", cri.sock}, args...)...)
			if out, err := c.CombinedOutput(); err != nil {
				t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		crictl := cri.crictl
		pod := map[string]any{
			"metadata": map[string]any{"name": "hello", "namespace": "default", "uid": "hello-uid"},
			"annotations": map[string]string{
				"bulwark.dev/policy": "ctr", "bulwark.dev/kernel": e.path("vmlinux"), "bulwark.dev/initrd": e.path("base.cpio"),
				"bulwark.dev/template": "none", "bulwark.dev/image-signature": string(sig),
				"bulwark.dev/image-signature-payload": base64.StdEncoding.EncodeToString(payload),
				// Each container in a sandbox of its own (TestContainerdPodVM: one VM for the pod).
				"bulwark.dev/pod-vm": "false",
			},
			"log_directory": e.path("pod-logs"),
			"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
		}
		ctrCfg := map[string]any{"metadata": map[string]any{"name": "hello"}, "image": map[string]any{"image": "docker.io/local/hello:1"}, "log_path": "hello.log"}
		for name, v := range map[string]any{"pod.json": pod, "container.json": ctrCfg} {
			b, _ := json.Marshal(v)
			if err := os.WriteFile(e.path(name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		out, err := crictl("runp", "--runtime", "bulwark", e.path("pod.json"))
		if err != nil {
			t.Fatal(err)
		}
		podID := strings.TrimSpace(out)
		defer func() { crictl("stopp", podID); crictl("rmp", podID) }()
		out, err = crictl("create", podID, e.path("container.json"), e.path("pod.json"))
		if err != nil {
			t.Fatal(err)
		}
		ctrID := strings.TrimSpace(out)
		if _, err := crictl("start", ctrID); err != nil {
			t.Fatal(err)
		}
		// The workload prints and exits 7: wait for the CRI to say so.
		deadline := time.Now().Add(120 * time.Second)
		for {
			out, err := crictl("inspect", "-o", "json", ctrID)
			var st struct {
				Status struct {
					State    string `json:"state"`
					ExitCode int    `json:"exitCode"`
				} `json:"status"`
			}
			if err == nil && json.Unmarshal([]byte(out), &st) == nil && st.Status.State == "CONTAINER_EXITED" {
				if st.Status.ExitCode != 7 {
					t.Errorf("the container exited with %d, want the workload's 7", st.Status.ExitCode)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the container did not exit within 120 s: %v\n%s", err, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
		// crictl logs prints the container's stdout and stderr on its own.
		c := exec.Command("crictl", "--runtime-endpoint", "unix://"+cri.sock, "logs", ctrID)
		lb, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("crictl logs: %v\n%s", err, lb)
		}
		logs := string(lb)
		if !strings.Contains(logs, "secrets: db") || !strings.Contains(logs, fingerprint) || !strings.Contains(logs, "oops") {
			t.Errorf("crictl logs:\n%s\nwant the secret's name and fingerprint %s", logs, fingerprint)
		}
		for _, args := range [][]string{{"rm", ctrID}, {"stopp", podID}, {"rmp", podID}} {
			if _, err := crictl(args...); err != nil {
				t.Fatal(err)
			}
		}
		if left := e.ps(t, true); len(left) != 0 {
			t.Errorf("the host service still lists %d sandboxes: %+v", len(left), left)
		}
		deadline = time.Now().Add(30 * time.Second)
		for len(cri.shims()) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("shims still run 30 s after the pod was removed: %v", cri.shims())
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("an image modified in containerd's content store is refused", func(t *testing.T) {
		var m struct {
			Layers []struct{ Digest string } `json:"layers"`
		}
		idx, err := os.ReadFile(e.path("ctr-image/index.json"))
		if err != nil {
			t.Fatal(err)
		}
		var ix struct {
			Manifests []struct{ Digest string } `json:"manifests"`
		}
		if err := json.Unmarshal(idx, &ix); err != nil || len(ix.Manifests) != 1 {
			t.Fatalf("index.json: %v %s", err, idx)
		}
		mb, err := os.ReadFile(e.path("ctr-image/blobs/sha256/" + strings.TrimPrefix(ix.Manifests[0].Digest, "sha256:")))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(mb, &m); err != nil || len(m.Layers) == 0 {
			t.Fatalf("manifest: %v %s", err, mb)
		}
		layer := strings.TrimPrefix(m.Layers[len(m.Layers)-1].Digest, "sha256:")
		blob := filepath.Join(cd.dir, "root", "io.containerd.content.v1.content", "blobs", "sha256", layer)
		b, err := os.ReadFile(blob)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0xff
		os.Chmod(blob, 0o644)
		if err := os.WriteFile(blob, b, 0o644); err != nil {
			t.Fatal(err)
		}
		so, se, code := run(t, "tampered", "ctr", false)
		if code == 0 || !strings.Contains(se, "sha256:"+layer) || !strings.Contains(se, "it was modified") {
			t.Fatalf("ctr run of a modified image: exit %d\nstdout:\n%s\nstderr:\n%s", code, so, se)
		}
		noSandboxes(t)
	})
}

// deploy/'s runtime handler snippet is a config containerd accepts, and
// declares the bulwark runtime with the annotations the shim reads.
func TestContainerdRuntimeSnippet(t *testing.T) {
	if _, err := exec.LookPath("containerd"); err != nil {
		t.Skip("containerd not found: run scripts/install-containerd.sh (make tools)")
	}
	if containerdMajor(t) < 2 {
		t.Skip("the snippet's version 3 config needs containerd 2.x (1.x: the version 2 form in its comment)")
	}
	out, err := exec.Command("containerd", "--config", "../deploy/containerd/bulwark-runtime.toml", "config", "dump").CombinedOutput()
	if err != nil {
		t.Fatalf("containerd config dump: %v\n%s", err, out)
	}
	for _, want := range []string{
		"[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.bulwark]",
		"runtime_type = 'io.containerd.bulwark.v2'",
		"pod_annotations = ['bulwark.dev/*']",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("containerd's view of the snippet lacks %q:\n%s", want, out)
		}
	}
}

// TestContainerdPodNetwork runs, through crictl, a pod with its own network
// namespace (Debian's CNI bridge and host-local plugins): the pod's
// measured VM (its container's) takes the pod's interface over through a tap, and a web
// server in it answers at the pod's IP from the host's namespace, through
// the CNI bridge; so does one whose VM is a clone of a pod template with
// a network device (launcher template create --pod --net), with the pod
// interface's MAC. A policy that does not allow the tap network refuses
// the container with its reason. stopp/rmp leave no QEMU, no sandbox, no
// network namespace and no tap behind.
func TestContainerdPodNetwork(t *testing.T) {
	needContainerd(t, true)
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat("/usr/lib/cni/" + p); err != nil {
			t.Skipf("CNI plugin %s not found: apt-get install containernetworking-plugins (make deps)", p)
		}
	}
	e := setup(t)
	buildShim(t)
	// The web image, with a policy that allows the tap network and one
	// ("web-nonet") that allows no network.
	e.must("launcher", "image", "build", "-o", e.path("web-image"), "--ref", "local/web:1", "--busybox", "sh,echo,mkdir,httpd,cat",
		"--entrypoint", "/bin/sh", "--cmd", "-c",
		"--cmd", `mkdir -p /tmp/www && echo "hello from $(cat /sys/class/net/eth0/address)" > /tmp/www/index.html && echo serving && exec httpd -f -p 8080 -h /tmp/www`)
	e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", e.path("web-image"))
	for _, name := range []string{"web", "web-nonet"} {
		e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
			"--image", e.path("web-image"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", name,
			"-o", e.path("attestd/policies/"+name+".yaml"))
	}
	f, err := os.OpenFile(e.path("attestd/policies/web.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("network:\n  allow: [tap]\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
	tarLayout(t, e.path("web-image"), e.path("web-image.tar"))
	sig, err := os.ReadFile(e.path("web-image.sig"))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := os.ReadFile(e.path("web-image.payload.json"))
	if err != nil {
		t.Fatal(err)
	}
	e.must("launcher", "image", "build", "-o", e.path("pause"), "--ref", "docker.io/local/pause:1", "--busybox", "sleep",
		"--entrypoint", "/bin/sleep", "--cmd", "3600")
	tarLayout(t, e.path("pause"), e.path("pause.tar"))
	// A template for pod VMs with a network namespace of their own.
	if out := e.must("launcher", "template", "create", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"), "--name", "pods-net", "--pod", "--net"); !strings.Contains(out, "pod VMs (15 image slots) with a network namespace of their own") {
		t.Fatalf("template create --pod --net: %s", out)
	}

	// The CNI network: a bridge of the test's own (its name and subnet
	// from the pid, so that two runs on one host do not meet), host-local
	// addresses kept in the test's directory; the bridge is deleted at the
	// end.
	dir := e.path("containerd-podnet")
	bridge := fmt.Sprintf("bwe2e%d", os.Getpid()%100000)
	subnet := fmt.Sprintf("10.89.%d.0/24", os.Getpid()%250)
	conflist := map[string]any{
		"cniVersion": "1.0.0", "name": "bulwark-e2e",
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
			"ipam": map[string]any{"type": "host-local", "dataDir": filepath.Join(dir, "cni-ipam"),
				"ranges": []any{[]any{map[string]any{"subnet": subnet}}}, "routes": []any{map[string]any{"dst": "0.0.0.0/0"}}},
		}},
	}
	if err := os.MkdirAll(filepath.Join(dir, "cni"), 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(conflist)
	if err := os.WriteFile(filepath.Join(dir, "cni", "10-bulwark-e2e.conflist"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", bridge).Run() })

	e.startDaemon(t)
	cri := e.startContainerdIn(t, dir, true)
	for _, args := range [][]string{
		{"-n", "k8s.io", "images", "import", e.path("pause.tar")},
		{"-n", "k8s.io", "images", "import", e.path("web-image.tar")},
		{"-n", "k8s.io", "images", "tag", "local/web:1", "docker.io/local/web:1"},
	} {
		c := exec.Command("ctr", append([]string{"-a", cri.sock}, args...)...)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	crictl := cri.crictl
	// runPodFrom starts a pod with its own network under policy, its VM
	// cloned from template (or "none": booted cold), and the web
	// container in it; it returns the pod's id, its IP and network
	// namespace, and the container's id and Start error.
	runPodFrom := func(t *testing.T, name, policy, template string) (podID, ip, netns, ctrID string, startErr error) {
		t.Helper()
		pod := map[string]any{
			"metadata": map[string]any{"name": name, "namespace": "default", "uid": name + "-uid"},
			"annotations": map[string]string{
				"bulwark.dev/policy": policy, "bulwark.dev/kernel": e.path("vmlinux"), "bulwark.dev/initrd": e.path("base.cpio"),
				"bulwark.dev/template": template, "bulwark.dev/image-signature": string(sig),
				"bulwark.dev/image-signature-payload": base64.StdEncoding.EncodeToString(payload),
			},
			"log_directory": e.path(name + "-logs"),
		}
		ctrCfg := map[string]any{"metadata": map[string]any{"name": "web"}, "image": map[string]any{"image": "docker.io/local/web:1"}, "log_path": "web.log"}
		for file, v := range map[string]any{name + "-pod.json": pod, name + "-container.json": ctrCfg} {
			b, _ := json.Marshal(v)
			if err := os.WriteFile(e.path(file), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		out, err := crictl("runp", "--runtime", "bulwark", e.path(name+"-pod.json"))
		if err != nil {
			t.Fatal(err)
		}
		podID = strings.TrimSpace(out)
		t.Cleanup(func() { crictl("stopp", podID); crictl("rmp", podID) })
		out, err = crictl("inspectp", "-o", "json", podID)
		if err != nil {
			t.Fatal(err)
		}
		var insp struct {
			Status struct {
				Network struct {
					IP string `json:"ip"`
				} `json:"network"`
			} `json:"status"`
			Info struct {
				RuntimeSpec struct {
					Linux struct {
						Namespaces []struct{ Type, Path string } `json:"namespaces"`
					} `json:"linux"`
				} `json:"runtimeSpec"`
			} `json:"info"`
		}
		if err := json.Unmarshal([]byte(out), &insp); err != nil || insp.Status.Network.IP == "" {
			t.Fatalf("crictl inspectp: no pod IP (%v):\n%s", err, out)
		}
		for _, ns := range insp.Info.RuntimeSpec.Linux.Namespaces {
			if ns.Type == "network" {
				netns = ns.Path
			}
		}
		if netns == "" {
			t.Fatalf("crictl inspectp: no network namespace path:\n%s", out)
		}
		out, err = crictl("create", podID, e.path(name+"-container.json"), e.path(name+"-pod.json"))
		if err != nil {
			t.Fatal(err)
		}
		ctrID = strings.TrimSpace(out)
		_, startErr = crictl("start", ctrID)
		return podID, insp.Status.Network.IP, netns, ctrID, startErr
	}
	runPod := func(t *testing.T, name, policy string) (podID, ip, netns, ctrID string, startErr error) {
		t.Helper()
		return runPodFrom(t, name, policy, "none")
	}
	// removePod stops and removes the pod: nothing of it is left.
	removePod := func(t *testing.T, podID, netns string) {
		t.Helper()
		for _, args := range [][]string{{"stopp", podID}, {"rmp", podID}} {
			if _, err := crictl(args...); err != nil {
				t.Fatal(err)
			}
		}
		if left := e.ps(t, true); len(left) != 0 {
			t.Errorf("the host service still lists %d sandboxes: %+v", len(left), left)
		}
		if _, err := os.Stat(netns); !os.IsNotExist(err) {
			t.Errorf("the pod's network namespace %s is still there: %v", netns, err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for len(cri.shims()) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("shims still run 30 s after the pod was removed: %v", cri.shims())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// getPod asks the pod at ip for its page until it answers 200 (the
	// server starts after the workload does) and returns the body; the
	// container's logs tell why it did not.
	getPod := func(t *testing.T, ip, ctrID string) []byte {
		t.Helper()
		client := &http.Client{Timeout: 10 * time.Second}
		deadline := time.Now().Add(120 * time.Second)
		for {
			resp, err := client.Get("http://" + ip + ":8080/")
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return body
				}
			}
			if time.Now().After(deadline) {
				logs, _ := exec.Command("crictl", "--runtime-endpoint", "unix://"+cri.sock, "logs", ctrID).CombinedOutput()
				t.Fatalf("GET http://%s:8080/ from the host: %v\ncontainer logs:\n%s", ip, err, logs)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	t.Run("the pod answers at its IP from the host", func(t *testing.T) {
		podID, ip, netns, ctrID, err := runPod(t, "web", "web")
		if err != nil {
			t.Fatal(err)
		}
		sbs := e.ps(t, false)
		var sb psEntry
		for _, p := range sbs {
			sb = p
		}
		if len(sbs) != 1 || sb.Status != "running" || sb.Network != "tap" || sb.QEMUPID == 0 {
			t.Fatalf("the host service's sandboxes: %+v, want one running with network tap", sbs)
		}
		// QEMU has a network namespace of its own: neither the host's
		// nor the pod's.
		qemuNS, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", sb.QEMUPID))
		hostNS, _ := os.Readlink("/proc/self/ns/net")
		if qemuNS == "" || qemuNS == hostNS {
			t.Errorf("QEMU's network namespace %q, the host's %q", qemuNS, hostNS)
		}
		// The server starts after the workload does: ask until it answers.
		body := getPod(t, ip, ctrID)
		if !strings.HasPrefix(string(body), "hello from ") {
			t.Errorf("GET the pod: %q", body)
		}
		t.Logf("the pod at %s answered: %s", ip, strings.TrimSpace(string(body)))
		if _, err := crictl("stop", ctrID); err != nil {
			t.Fatal(err)
		}
		if _, err := crictl("rm", ctrID); err != nil {
			t.Fatal(err)
		}
		removePod(t, podID, netns) // the pod's VM goes with the pod
		waitGone(t, sb.QEMUPID)
		if _, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + ip + ":8080/"); err == nil {
			t.Errorf("the pod's address still answers after rmp")
		}
	})

	t.Run("a clone of a --pod --net template answers at its pod IP with its pod's MAC", func(t *testing.T) {
		podID, ip, netns, ctrID, err := runPodFrom(t, "web-clone", "web", "pods-net")
		if err != nil {
			t.Fatal(err)
		}
		sbs := e.ps(t, false)
		var sb psEntry
		for _, p := range sbs {
			sb = p
		}
		if len(sbs) != 1 || sb.Status != "running" || sb.Network != "tap" || sb.Template != "pods-net" {
			t.Fatalf("the host service's sandboxes: %+v, want one running with network tap, a clone of template pods-net", sbs)
		}
		// The guest's eth0 has the pod interface's MAC, not the
		// template's (which its resumed device state carries).
		link, err := exec.Command("nsenter", "--net="+netns, "ip", "-o", "link", "show", "eth0").CombinedOutput()
		mac := ""
		if f := strings.Fields(string(link)); err == nil {
			for i := range f {
				if f[i] == "link/ether" && i+1 < len(f) {
					mac = f[i+1]
				}
			}
		}
		if mac == "" {
			t.Fatalf("the pod's eth0: %v\n%s", err, link)
		}
		body := getPod(t, ip, ctrID)
		if want := "hello from " + mac + "\n"; string(body) != want {
			t.Errorf("GET the pod: %q, want %q", body, want)
		}
		// The pod's launch event names the template, as any clone's.
		lg, err := measure.ReadLogFile(filepath.Join(e.state, "launch", "launch.cel"))
		if err != nil {
			t.Fatal(err)
		}
		cloned := false
		for _, r := range lg.Records() {
			if r.Event != nil && r.Event.SandboxID == sb.ID {
				cloned = r.Event.Cloned() && r.Event.TemplateRecipe != "" && r.Event.Network == "tap"
			}
		}
		if !cloned {
			t.Errorf("the pod's launch event does not name its template with network tap")
		}
		if _, err := crictl("stop", ctrID); err != nil {
			t.Fatal(err)
		}
		if _, err := crictl("rm", ctrID); err != nil {
			t.Fatal(err)
		}
		removePod(t, podID, netns)
		waitGone(t, sb.QEMUPID)
	})

	t.Run("two pods at once, each its own VM at its own IP", func(t *testing.T) {
		type running struct{ podID, ip, netns, ctrID string }
		var pods []running
		for _, name := range []string{"web-a", "web-b"} {
			podID, ip, netns, ctrID, err := runPod(t, name, "web")
			if err != nil {
				t.Fatal(err)
			}
			pods = append(pods, running{podID, ip, netns, ctrID})
		}
		sbs := e.ps(t, false)
		qemus := map[int]bool{}
		for _, sb := range sbs {
			if sb.Status == "running" && sb.QEMUPID != 0 {
				qemus[sb.QEMUPID] = true
			}
		}
		if len(sbs) != 2 || len(qemus) != 2 {
			t.Fatalf("the host service's sandboxes: %+v, want two running, each with its own QEMU", sbs)
		}
		bodies := map[string]bool{}
		for _, p := range pods {
			bodies[string(getPod(t, p.ip, p.ctrID))] = true
		}
		if len(bodies) != 2 {
			t.Errorf("the two pods answered alike (%v): each VM should have its own pod's eth0", bodies)
		}
		// The first pod goes alone; removePod then checks that nothing
		// of either is left.
		for _, args := range [][]string{{"stopp", pods[0].podID}, {"rmp", pods[0].podID}} {
			if _, err := crictl(args...); err != nil {
				t.Fatal(err)
			}
		}
		removePod(t, pods[1].podID, pods[1].netns)
		if _, err := os.Stat(pods[0].netns); !os.IsNotExist(err) {
			t.Errorf("the first pod's network namespace %s is still there: %v", pods[0].netns, err)
		}
		for pid := range qemus {
			waitGone(t, pid)
		}
	})

	t.Run("a policy without the tap network refuses the container", func(t *testing.T) {
		podID, _, netns, _, err := runPod(t, "nonet", "web-nonet")
		// attestd tells a node which rule refused, not what the policy
		// allows (an admin sees that).
		if err == nil || !strings.Contains(err.Error(), `policy "web-nonet" does not allow it`) || !strings.Contains(err.Error(), "network: the guest network is not allowed") {
			t.Fatalf("crictl start: %v, want the policy's refusal of the tap network", err)
		}
		removePod(t, podID, netns)
	})
}
