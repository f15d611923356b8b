package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// daemon is a running 'launcher daemon' of an env.
type daemon struct {
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan struct{}
}

// startDaemon starts 'launcher daemon' (with extra flags) and waits until
// it serves; it is stopped when t ends.
func (e *env) startDaemon(t testing.TB, extra ...string) *daemon {
	t.Helper()
	c := e.cmd("launcher", append([]string{"daemon", "--attestd", e.addr, "--ca", e.ca}, extra...)...)
	d := &daemon{cmd: c, log: &syncBuffer{}, exited: make(chan struct{})}
	pr, pw := io.Pipe()
	c.Stdout, c.Stderr = pw, pw
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := false
		for sc.Scan() {
			d.log.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), "launcher daemon serving") {
				once = true
				close(serving)
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() { c.Wait(); pw.Close(); close(d.exited) }()
	t.Cleanup(func() {
		c.Process.Signal(syscall.SIGTERM)
		<-d.exited
		if t.Failed() {
			t.Logf("launcher daemon log:\n%s", d.log.String())
		}
	})
	select {
	case <-serving:
	case <-d.exited:
		t.Fatalf("launcher daemon exited before serving:\n%s", d.log.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("launcher daemon did not serve in 60 s:\n%s", d.log.String())
	}
	return d
}

// psEntry is what 'launcher ps --json' and 'inspect' print.
type psEntry struct {
	ID            string   `json:"id"`
	Status        string   `json:"status"`
	Policy        string   `json:"policy"`
	AttestationID string   `json:"attestation_id"`
	Secrets       []string `json:"secrets"`
	ExitCode      int      `json:"exit_code"`
	Error         string   `json:"error"`
	QEMUPID       int      `json:"qemu_pid"`
	Ports         []string `json:"ports"`
	Template      string   `json:"template"`
	Network       string   `json:"network"`
}

func (e *env) ps(t testing.TB, all bool) map[string]psEntry {
	t.Helper()
	args := []string{"ps", "--json"}
	if all {
		args = append(args, "-a")
	}
	out, err := e.cmd("launcher", args...).Output()
	if err != nil {
		t.Fatalf("launcher ps: %v", err)
	}
	var list []psEntry
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("ps --json: %v\n%s", err, out)
	}
	m := map[string]psEntry{}
	for _, p := range list {
		m[p.ID] = p
	}
	return m
}

// runDetached is 'launcher run -d' of the looping image; it returns the
// sandbox id.
func (e *env) runDetached(t *testing.T) string {
	t.Helper()
	c := e.cmd("launcher", "run", "-d", "--policy", "daemon", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", "loop-image", "--signer", e.path("cosign.pub"), "--template", "none", "--stop-timeout", "3s")
	var so, se bytes.Buffer
	c.Stdout, c.Stderr = &so, &se
	if err := c.Run(); err != nil {
		t.Fatalf("run -d: %v\nstdout:\n%s\nstderr:\n%s", err, so.String(), se.String())
	}
	id := strings.TrimSpace(so.String())
	if len(id) != 32 {
		t.Fatalf("run -d printed %q, want a sandbox id", id)
	}
	e.killOnCleanup(t, id)
	return id
}

// killOnCleanup makes sure sandbox id's QEMU does not outlive the test,
// whatever happened in it: a daemon's sandboxes outlive the daemon by
// design, so a test that fails between killing one and restarting it
// would otherwise leave QEMU running.
func (e *env) killOnCleanup(t testing.TB, id string) {
	t.Cleanup(func() {
		b, err := os.ReadFile(filepath.Join(e.state, "sandboxes", id, "sandbox.json"))
		if err != nil {
			return
		}
		var r struct {
			QEMUPID int `json:"qemuPid"`
		}
		if json.Unmarshal(b, &r) != nil || r.QEMUPID <= 0 {
			return
		}
		if cmd, err := os.ReadFile("/proc/" + strconv.Itoa(r.QEMUPID) + "/cmdline"); err == nil && strings.Contains(string(cmd), id) {
			syscall.Kill(r.QEMUPID, syscall.SIGKILL)
		}
	})
}

// waitGone waits until no process has pid (QEMU is reaped by someone).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU (pid %d) still runs 30 s after its owner died", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The host service through the real binaries: a detached sandbox runs,
// ps/logs/exec/inspect/stop/rm work on it, bad requests are refused, the
// sandboxes of a daemon killed with -9 run on and the next daemon takes
// them over (or reports lost the one whose QEMU died meanwhile), and
// SIGTERM stops every workload gracefully.
func TestDaemonSandboxes(t *testing.T) {
	e := setup(t)
	e.must("launcher", "image", "build", "-o", e.path("loop-image"), "--busybox", "sh,echo,cat,sha256sum,cut,sleep,tty,stty",
		"--entrypoint", "/bin/sh", "--cmd", "-c",
		"--cmd", `echo "fingerprint $(sha256sum /run/secrets/db | cut -d' ' -f1)"; i=0; while :; do echo "tick $i"; echo "err $i" >&2; i=$((i+1)); sleep 1; done`)
	e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", e.path("loop-image"))
	e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", e.path("loop-image"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "daemon",
		"-o", e.path("attestd/policies/daemon.yaml"))
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
	sum := sha256.Sum256(e.secret)
	fingerprint := "fingerprint " + hex.EncodeToString(sum[:])

	// Without a daemon, its clients say how to start one.
	if out, err := e.cmd("launcher", "ps").CombinedOutput(); err == nil || !strings.Contains(string(out), "launcher daemon") {
		t.Fatalf("ps without a daemon: %v\n%s", err, out)
	}
	top := t // daemons started in subtests outlive them
	d := e.startDaemon(t)
	// A second daemon on the same state directory is refused.
	if out, err := e.cmd("launcher", "daemon", "--attestd", e.addr, "--ca", e.ca).CombinedOutput(); err == nil || !strings.Contains(string(out), "another launcher daemon") {
		t.Fatalf("a second daemon: %v\n%s", err, out)
	}

	id := e.runDetached(t)
	sb, ok := e.ps(t, false)[id]
	if !ok || sb.Status != "running" || sb.Policy != "daemon" || sb.AttestationID == "" || len(sb.Secrets) != 1 {
		t.Fatalf("ps: %+v (ok %v)", sb, ok)
	}

	t.Run("logs -f follows the output, stdout and stderr apart", func(t *testing.T) {
		c := e.cmd("launcher", "logs", "-f", id[:8])
		so, err := c.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var se syncBuffer
		c.Stderr = writerTo(&se)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		defer c.Process.Kill()
		sc := bufio.NewScanner(so)
		var lines []string
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if sc.Text() == "tick 2" {
				break
			}
		}
		if len(lines) < 2 || lines[0] != fingerprint {
			t.Fatalf("stdout of logs -f: %q, want the fingerprint first, then ticks", lines)
		}
		if strings.Contains(strings.Join(lines, "\n"), "err ") {
			t.Errorf("stderr lines on stdout: %q", lines)
		}
		c.Process.Kill()
		c.Wait()
		if !strings.Contains(se.String(), "err 0") {
			t.Errorf("stderr of logs -f: %q, want the workload's stderr", se.String())
		}
	})

	t.Run("exec runs a command beside the workload", func(t *testing.T) {
		c := e.cmd("launcher", "exec", id[:8], "--", "sh", "-c", `echo "fingerprint $(sha256sum /run/secrets/db | cut -d' ' -f1)"; echo oops >&2; exit 5`)
		var so, se bytes.Buffer
		c.Stdout, c.Stderr = &so, &se
		err := c.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 5 {
			t.Fatalf("exec: %v, want exit code 5\nstdout:\n%s\nstderr:\n%s", err, so.String(), se.String())
		}
		if strings.TrimSpace(so.String()) != fingerprint || strings.TrimSpace(se.String()) != "oops" {
			t.Errorf("exec: stdout %q, stderr %q", so.String(), se.String())
		}
		out, err := e.cmd("launcher", "exec", id, "no-such-command").CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 127 || !strings.Contains(string(out), "not found") {
			t.Errorf("exec of a missing command: %v\n%s", err, out)
		}
	})

	t.Run("exec -i forwards stdin, exec -i -t runs on a terminal", func(t *testing.T) {
		in := strings.Repeat("piped-in line\n", 3000)
		c := e.cmd("launcher", "exec", "-i", id[:8], "--", "cat")
		c.Stdin = strings.NewReader(in)
		var se bytes.Buffer
		c.Stderr = &se
		if out, err := c.Output(); err != nil || string(out) != in {
			t.Errorf("exec -i cat: %d bytes (want %d), %v\n%s", len(out), len(in), err, se.String())
		}
		// -i -t with a pipe as stdin is refused, as run refuses it.
		c = e.cmd("launcher", "exec", "-i", "-t", id[:8], "--", "cat")
		c.Stdin = strings.NewReader("x")
		out, err := c.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "-t with -i: stdin is not a terminal") {
			t.Errorf("exec -i -t with a pipe: %v\n%s", err, out)
		}
		// Through a host pseudo-terminal, which the launcher puts in raw
		// mode while the command runs and restores after.
		c = e.cmd("launcher", "exec", "-i", "-t", id[:8], "--", "sh", "-c", ttyScript)
		slave := driveExecTTY(t, c, func(pts string) bool {
			out, err := e.cmd("launcher", "exec", id[:8], "--", "stty", "-F", pts, "size").Output()
			return err == nil && string(out) == "50 132\n"
		})
		after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if after.Lflag&unix.ICANON == 0 || after.Lflag&unix.ECHO == 0 {
			t.Errorf("the launcher left its terminal raw: lflag %#x", after.Lflag)
		}
	})

	t.Run("signals to launcher exec go to the command", func(t *testing.T) {
		testLauncherExecSignals(t, e, id[:8])
	})

	t.Run("bad requests are refused, naming what is wrong", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			code int
			want string
		}{
			{[]string{"run", "-d", "--attestd", e.addr, "--policy", "daemon", "--image", "loop-image"}, 2, "--attestd"},
			{[]string{"run", "-d", "--policy", "no/such", "--image", "loop-image"}, 2, "policy"},
			{[]string{"logs", "ffffffff"}, 1, "no sandbox ffffffff"},
			{[]string{"logs", "not-hex"}, 1, "want a sandbox id"},
			{[]string{"stop", "--time", "0s", id}, 2, "--time"},
			{[]string{"rm", id}, 1, "stop it first"},
			{[]string{"inspect"}, 2, "one sandbox id"},
		} {
			out, err := e.cmd("launcher", tc.args...).CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != tc.code || !strings.Contains(string(out), tc.want) {
				t.Errorf("launcher %s: exit %d, want %d and %q:\n%s", strings.Join(tc.args, " "), code, tc.code, tc.want, out)
			}
		}
	})

	t.Run("stop ends the workload gracefully and keeps its record", func(t *testing.T) {
		out := e.must("launcher", "stop", "--time", "5s", id[:10])
		if !strings.Contains(out, id+" exited (exit code 143)") { // sh dies of SIGTERM
			t.Fatalf("stop: %s", out)
		}
		if _, ok := e.ps(t, false)[id]; ok {
			t.Error("ps lists a stopped sandbox without -a")
		}
		var got psEntry
		if err := json.Unmarshal([]byte(e.must("launcher", "inspect", id)), &got); err != nil {
			t.Fatal(err)
		}
		if got.Status != "exited" || got.ExitCode != 143 {
			t.Errorf("inspect after stop: %+v", got)
		}
		if r := e.endRecords(t)[id]; r != "stopped" {
			t.Errorf("END record of the stopped sandbox in the launch log: %q, want stopped", r)
		}
		waitGone(t, got.QEMUPID)
		logs := e.must("launcher", "logs", id)
		if !strings.Contains(logs, fingerprint) || !strings.Contains(logs, "tick 1") {
			t.Errorf("logs after stop:\n%s", logs)
		}
		if out, err := e.cmd("launcher", "exec", id, "true").CombinedOutput(); err == nil || !strings.Contains(string(out), "only beside a running workload") {
			t.Errorf("exec in an ended sandbox: %v\n%s", err, out)
		}
		e.must("launcher", "rm", id)
		if _, ok := e.ps(t, true)[id]; ok {
			t.Error("ps -a lists a removed sandbox")
		}
		if _, err := os.Stat(filepath.Join(e.state, "sandboxes", id)); !os.IsNotExist(err) {
			t.Errorf("rm left the sandbox's directory: %v", err)
		}
	})

	t.Run("a detached web server answers on a forwarded port", func(t *testing.T) {
		e.must("launcher", "image", "build", "-o", e.path("web-d"), "--busybox", "sh,mkdir,echo,httpd",
			"--entrypoint", "/bin/sh", "--cmd", "-c", "--cmd", `mkdir -p www && echo "hello-detached $GREETING" > www/index.html && exec httpd -f -p 8080 -h www`)
		// The page is written to, and served from, a scratch disk (-w /srv).
		e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", e.path("web-d"))
		e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
			"--image", e.path("web-d"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "webd",
			"-o", e.path("attestd/policies/webd.yaml"))
		pol, err := os.ReadFile(e.path("attestd/policies/webd.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		pol = append(pol, "\nenv:\n  keys: [GREETING]\nnetwork:\n  allow: [user]\nvolumes:\n  scratch: {paths: [/srv]}\n"...)
		if err := os.WriteFile(e.path("attestd/policies/webd.yaml"), pol, 0o644); err != nil {
			t.Fatal(err)
		}
		e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
		c := e.cmd("launcher", "run", "-d", "--policy", "webd", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
			"--image", "web-d", "--signer", e.path("cosign.pub"), "--template", "none",
			"-e", "GREETING=from-run", "-w", "/srv", "--scratch", "/srv:size=32m", "--net", "user", "-p", "127.0.0.1:0:8080")
		out, err := c.Output()
		if err != nil {
			t.Fatalf("run -d of the web server: %v", err)
		}
		webID := strings.TrimSpace(string(out))
		e.killOnCleanup(t, webID)
		sb := e.ps(t, false)[webID]
		if sb.Status != "running" || len(sb.Ports) != 1 || !strings.HasPrefix(sb.Ports[0], "127.0.0.1:") || !strings.HasSuffix(sb.Ports[0], "->8080/tcp") {
			t.Fatalf("ps: %+v", sb)
		}
		hostPort := strings.TrimSuffix(strings.TrimPrefix(sb.Ports[0], "127.0.0.1:"), "->8080/tcp")
		// httpd may not listen yet when the workload has just started:
		// ask until it answers, within a deadline.
		var body []byte
		deadline := time.Now().Add(60 * time.Second)
		for {
			resp, err := http.Get("http://127.0.0.1:" + hostPort + "/")
			if err == nil {
				body, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("the detached web server did not answer on port %s in 60 s (last: %v)", hostPort, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if string(body) != "hello-detached from-run\n" {
			t.Errorf("GET answered %q", body)
		}
		// -i has no meaning for a detached workload; a relative volume is
		// made absolute, a bad one refused naming the flag.
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"-i"}, "-i: a detached workload has no stdin"},
			{[]string{"-p", "8080"}, "port forwards need --net user"},
		} {
			args := append([]string{"run", "-d", "--policy", "webd", "--image", "web-d"}, tc.args...)
			out, err := e.cmd("launcher", args...).CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), tc.want) {
				t.Errorf("run -d %v: %v\n%s", tc.args, err, out)
			}
		}
		// The scratch disk is in the sandbox's directory until rm.
		scratch := filepath.Join(e.state, "sandboxes", webID, "scratch0")
		if st, err := os.Stat(scratch); err != nil || st.Size() != 32<<20 {
			t.Errorf("the detached sandbox's scratch disk: %v", err)
		}
		e.must("launcher", "stop", webID)
		if _, err := os.Stat(scratch); err != nil {
			t.Errorf("stop removed the scratch disk: %v", err)
		}
		e.must("launcher", "rm", webID)
		if _, err := os.Stat(scratch); !os.IsNotExist(err) {
			t.Errorf("rm left the scratch disk: %v", err)
		}
	})

	t.Run("kill -9 of the daemon: its sandboxes run on and the next daemon takes them over", func(t *testing.T) {
		keepID := e.runDetached(t)
		lostID := e.runDetached(t)
		running := e.ps(t, false)
		keepPID, lostPID := running[keepID].QEMUPID, running[lostID].QEMUPID
		if keepPID == 0 || lostPID == 0 {
			t.Fatalf("no QEMU pids: %+v", running)
		}
		d.cmd.Process.Kill()
		<-d.exited
		// QEMU outlives the daemon; one of them dies while no daemon runs.
		if err := syscall.Kill(keepPID, 0); err != nil {
			t.Fatalf("QEMU of %s died with the daemon: %v", keepID, err)
		}
		syscall.Kill(lostPID, syscall.SIGKILL)
		waitGone(t, lostPID)
		d = e.startDaemon(top)
		before := strings.Count(e.must("launcher", "logs", keepID), "tick ")
		all := e.ps(t, true)
		if got := all[keepID]; got.Status != "running" || got.QEMUPID != keepPID {
			t.Fatalf("after a restart, the surviving sandbox: %+v", got)
		}
		if got := all[lostID]; got.Status != "lost" || !strings.Contains(got.Error, "ended while no host service was running") {
			t.Fatalf("after a restart, the sandbox whose QEMU died: %+v", got)
		}
		// Its output goes on into the same log, and it can be followed,
		// exec'd into and stopped as before.
		c := e.cmd("launcher", "logs", "-f", keepID)
		so, err := c.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { c.Process.Kill(); c.Wait() }()
		sc := bufio.NewScanner(so)
		n := 0
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "tick ") {
				n++
			}
			if n > before+1 {
				break
			}
		}
		if n <= before+1 {
			t.Fatalf("no new output after the takeover (%d ticks before, %d now)", before, n)
		}
		if out := e.must("launcher", "exec", keepID, "echo", "still here"); strings.TrimSpace(out) != "still here" {
			t.Errorf("exec after the takeover: %q", out)
		}
		if out := e.must("launcher", "stop", "--time", "5s", keepID); !strings.Contains(out, "exited (exit code 143)") {
			t.Errorf("stop after the takeover: %s", out)
		}
		waitGone(t, keepPID)
		e.must("launcher", "rm", keepID, lostID)
	})

	t.Run("--keep-sandboxes: SIGTERM leaves sandboxes running for the next daemon", func(t *testing.T) {
		d.cmd.Process.Signal(syscall.SIGTERM) // the plain daemon: nothing runs now
		<-d.exited
		d = e.startDaemon(top, "--keep-sandboxes")
		id := e.runDetached(t)
		pid := e.ps(t, false)[id].QEMUPID
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(60 * time.Second):
			t.Fatalf("the daemon did not stop within 60 s of SIGTERM:\n%s", d.log.String())
		}
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("QEMU ended with a --keep-sandboxes daemon: %v", err)
		}
		d = e.startDaemon(top)
		if got := e.ps(t, false)[id]; got.Status != "running" || got.QEMUPID != pid {
			t.Fatalf("after a kept restart: %+v", got)
		}
		if out := e.must("launcher", "exec", id, "echo", "kept"); strings.TrimSpace(out) != "kept" {
			t.Errorf("exec after a kept restart: %q", out)
		}
		e.must("launcher", "stop", id)
		e.must("launcher", "rm", id)
	})

	t.Run("SIGTERM of the daemon stops every workload gracefully", func(t *testing.T) {
		ids := []string{e.runDetached(t), e.runDetached(t)}
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(60 * time.Second):
			t.Fatalf("the daemon did not stop within 60 s of SIGTERM:\n%s", d.log.String())
		}
		d = e.startDaemon(top)
		all := e.ps(t, true)
		for _, id := range ids {
			if got := all[id]; got.Status != "exited" || got.ExitCode != 143 || !strings.Contains(got.Error, "host service shut down") {
				t.Errorf("%s after SIGTERM: %+v", id, got)
			}
		}
	})
}

// writerTo adapts a syncBuffer to an io.Writer.
func writerTo(b *syncBuffer) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		b.WriteString(string(p))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
