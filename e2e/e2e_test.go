// Package e2e runs Bulwark as a user does: the real attestd, launcher and
// guest agent binaries, a real TPM (a managed swtpm), and real QEMU boots of
// the host's Debian kernel (TCG here). It covers the allowed launch (the
// workload reads its secret from /run/secrets; the host never sees it) and
// the refusals that must never start a workload: a tampered kernel, a
// tampered image layer, a wrong signer, and a policy deny.
package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/cosigntest"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

var bins string // directory holding the freshly built binaries

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		// Every test here boots VMs through the real binaries and skips
		// under -short: building them would only cost time.
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "bulwark-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command("go", "build", "-o", dir+"/", "../cmd/launcher", "../cmd/attestd", "../cmd/bulwark-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building binaries: %v\n%s", err, out)
		return 1
	}
	bins = dir
	return m.Run()
}

// env is one host + one attestd, shared by the cases of a test.
type env struct {
	t        testing.TB
	dir      string // scratch: keys, artifacts, attestd data
	state    string // BULWARK_STATE of the host
	addr, ca string
	admin    []string // attestd ctl connection flags
	secret   []byte
}

func need(t testing.TB, tools map[string]string) {
	t.Helper()
	for tool, pkg := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: apt-get install %s", tool, pkg)
		}
	}
}

func (e *env) cmd(name string, args ...string) *exec.Cmd {
	c := exec.Command(filepath.Join(bins, name), args...)
	c.Env = append(os.Environ(), "BULWARK_STATE="+e.state, "COSIGN_PASSWORD=e2e-password")
	c.Dir = e.dir
	return c
}

// must runs a binary and fails the test on a non-zero exit.
func (e *env) must(name string, args ...string) string {
	e.t.Helper()
	out, err := e.cmd(name, args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (e *env) path(p string) string { return filepath.Join(e.dir, p) }

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) WriteString(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(v)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// setup starts a managed swtpm and attestd, makes keys and artifacts, stores
// a secret and enrolls the host.
func setup(t testing.TB) *env {
	need(t, map[string]string{"qemu-system-x86_64": "qemu-system-x86", "swtpm": "swtpm", "swtpm_setup": "swtpm-tools", "busybox": "busybox-static"})
	if testing.Short() {
		t.Skip("boots VMs: skipped with -short")
	}
	dir := t.TempDir()
	e := &env{t: t, dir: dir, state: filepath.Join(dir, "host-state")}
	t.Cleanup(func() { e.cmd("launcher", "tpm", "stop").Run() })

	e.must("launcher", "tpm", "info") // creates and starts the managed swtpm
	ca := filepath.Join(e.state, "swtpm", "ca")
	srv := e.cmd("attestd", "serve", "--data", e.path("attestd"), "--listen", "127.0.0.1:0", "--metrics-addr", "",
		"--tpm", "swtpm:"+filepath.Join(e.state, "swtpm"),
		"--ek-ca", filepath.Join(ca, "swtpm-localca-rootca-cert.pem"), "--ek-ca", filepath.Join(ca, "issuercert.pem"))
	// attestd picks its own port and prints it: no port is assumed free.
	srvLog := &syncBuffer{}
	pr, pw := io.Pipe()
	srv.Stdout, srv.Stderr = pw, pw
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			srvLog.WriteString(sc.Text() + "\n")
			if a, ok := strings.CutPrefix(sc.Text(), "attestd: serving on "); ok {
				addr <- a
			}
		}
		io.Copy(io.Discard, pr)
	}()
	exited := make(chan struct{})
	go func() { srv.Wait(); pw.Close(); close(exited) }()
	t.Cleanup(func() {
		srv.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("attestd log:\n%s", srvLog.String())
		}
	})
	select {
	case e.addr = <-addr:
	case <-exited:
		t.Fatalf("attestd exited before serving:\n%s", srvLog.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("attestd did not start serving in 60 s:\n%s", srvLog.String())
	}
	e.ca = e.path("attestd/tls/ca.crt")
	e.must("attestd", "admin-cert", "--data", e.path("attestd"), "--name", "e2e-admin", "-o", e.path("admin"))
	e.admin = []string{"--addr", e.addr, "--ca", e.ca, "--cert", e.path("admin/e2e-admin.crt"), "--key", e.path("admin/e2e-admin.key")}

	e.must("launcher", "keygen", "--output-key-prefix", e.path("cosign"))
	e.must("launcher", "kernel", "extract", "-o", e.path("vmlinux"))
	e.must("launcher", "initrd", "build", "--agent", filepath.Join(bins, "bulwark-agent"), "-o", e.path("base.cpio"))
	e.must("launcher", "image", "build", "-o", e.path("image"), "--busybox", "sh,echo,cat,sha256sum,cut,ls",
		"--entrypoint", "/bin/sh", "--cmd", "-c",
		"--cmd", `echo "secrets: $(ls /run/secrets)"; echo "fingerprint $(sha256sum /run/secrets/db | cut -d' ' -f1)"; exit 7`)
	for _, f := range []string{"vmlinux", "base.cpio"} {
		e.must("launcher", "sign", "--key", e.path("cosign.key"), e.path(f))
	}
	e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", e.path("image"))

	// Two policies: "allow" from the artifacts themselves, and "other",
	// which allows the same kernel and initrd but another image.
	e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", e.path("image"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "allow",
		"-o", e.path("attestd/policies/allow.yaml"))
	e.must("launcher", "image", "build", "-o", e.path("other-image"), "--busybox", "sh", "--entrypoint", "/bin/sh")
	e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", e.path("other-image"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "other",
		"-o", e.path("attestd/policies/other.yaml"))
	// "hostpcr": the "allow" policy plus a host boot state this host does
	// not have (its PCR 0 is all zeros), which only the quote can show: it
	// passes the preflight and is denied at attestation, after boot.
	allow, err := os.ReadFile(e.path("attestd/policies/allow.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	hostpcr := strings.Replace(string(allow), "name: allow", "name: hostpcr", 1) +
		"\nhost:\n  pcrs:\n    0: [" + strings.Repeat("ab", 32) + "]\n"
	if err := os.WriteFile(e.path("attestd/policies/hostpcr.yaml"), []byte(hostpcr), 0o644); err != nil {
		t.Fatal(err)
	}
	// "anyargs": the "allow" policy, but any command may replace the image's.
	if !strings.Contains(string(allow), "allow: none") {
		t.Fatalf("the generated policy has no 'args: allow: none' to relax:\n%s", allow)
	}
	anyargs := strings.Replace(strings.Replace(string(allow), "name: allow", "name: anyargs", 1), "allow: none", "allow: any", 1)
	if err := os.WriteFile(e.path("attestd/policies/anyargs.yaml"), []byte(anyargs), 0o644); err != nil {
		t.Fatal(err)
	}
	// "coldonly": the "allow" policy, refusing clones of VM templates.
	coldonly := strings.Replace(string(allow), "name: allow", "name: coldonly", 1) + "\ntemplates:\n  allow: false\n"
	if err := os.WriteFile(e.path("attestd/policies/coldonly.yaml"), []byte(coldonly), 0o644); err != nil {
		t.Fatal(err)
	}
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)

	e.secret = []byte(fmt.Sprintf("e2e-secret-%d", time.Now().UnixNano()))
	if err := os.WriteFile(e.path("secret"), e.secret, 0o600); err != nil {
		t.Fatal(err)
	}
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "secret", "put", "db", "--from-file", e.path("secret"))...)
	e.must("launcher", "enroll", "--attestd", e.addr, "--ca", e.ca)
	return e
}

type result struct {
	code           int
	stdout, stderr string
}

// launch runs `launcher run` with the given artifacts and extra flags.
func (e *env) launch(kernel, image, policy string, extra ...string) result {
	e.t.Helper()
	// -v: progress lines show how far a refused launch got.
	args := append([]string{"run", "-v", "--attestd", e.addr, "--ca", e.ca, "--policy", policy,
		"--kernel", kernel, "--initrd", e.path("base.cpio"), "--image", image}, extra...)
	c := e.cmd("launcher", args...)
	var so, se bytes.Buffer
	c.Stdout, c.Stderr = &so, &se
	err := c.Run()
	r := result{stdout: so.String(), stderr: se.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	// Whatever happened, the secret's plaintext never reaches the host.
	if strings.Contains(r.stdout+r.stderr, string(e.secret)) {
		e.t.Fatalf("the secret's plaintext reached the launcher's output")
	}
	return r
}

// refused checks that a launch failed as a launch (exit 125), that the
// workload never ran, and that the error says why.
func refused(t *testing.T, r result, why ...string) {
	t.Helper()
	if r.code != 125 {
		t.Fatalf("exit code %d, want 125 (launch refused)\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout, "fingerprint") || strings.Contains(r.stdout, "secrets:") {
		t.Fatalf("the workload ran:\n%s", r.stdout)
	}
	for _, w := range why {
		if !regexp.MustCompile(w).MatchString(r.stderr) {
			t.Errorf("stderr does not match %q:\n%s", w, r.stderr)
		}
	}
}

// beforeBoot checks that a refused launch never started QEMU.
func beforeBoot(t *testing.T, r result) {
	t.Helper()
	if strings.Contains(r.stderr, "booting the sandbox") {
		t.Fatalf("the refusal came after boot:\n%s", r.stderr)
	}
}

// runReport is what `launcher run --report` writes.
type runReport struct {
	SandboxID          string   `json:"sandbox_id"`
	Accelerator        string   `json:"accelerator"`
	AttestationID      string   `json:"attestation_id"`
	Policy             string   `json:"policy"`
	Secrets            []string `json:"secrets"`
	Template           string   `json:"template"`
	StartMillis        int64    `json:"start_ms"`
	ExitCode           int      `json:"exit_code"`
	Error              string   `json:"error"`
	Seconds            float64  `json:"seconds"`
	QEMUPeakRSSMiB     float64  `json:"qemu_peak_rss_mib"`
	LauncherPeakRSSMiB float64  `json:"launcher_peak_rss_mib"`
	Ports              []string `json:"ports"`
}

func readReport(t testing.TB, path string) runReport {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("--report: %v", err)
	}
	var r runReport
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("--report %s: %v\n%s", path, err, b)
	}
	return r
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}

func TestMeasuredAttestedLaunch(t *testing.T) {
	e := setup(t)
	signer := []string{"--signer", e.path("cosign.pub")}

	t.Run("allowed: the workload reads its secret", func(t *testing.T) {
		report := e.path("allowed-report.json")
		r := e.launch(e.path("vmlinux"), e.path("image"), "allow", append(signer, "--report", report)...)
		if r.code != 7 {
			t.Fatalf("exit code %d, want the workload's 7\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		rep := readReport(t, report)
		if rep.ExitCode != 7 || rep.Error != "" || rep.Policy != "allow" || len(rep.Secrets) != 1 || rep.Secrets[0] != "db" || rep.Template != "" || rep.StartMillis <= 0 ||
			!strings.HasPrefix(rep.AttestationID, "att-") || len(rep.SandboxID) != 32 || rep.Accelerator == "" || rep.Seconds <= 0 {
			t.Errorf("--report: %+v", rep)
		}
		// A booted guest of 512 MiB and a Go process: tens of MiB at least.
		if rep.QEMUPeakRSSMiB < 20 || rep.LauncherPeakRSSMiB < 5 {
			t.Errorf("--report peak memory: QEMU %v MiB, launcher %v MiB", rep.QEMUPeakRSSMiB, rep.LauncherPeakRSSMiB)
		}
		sum := sha256.Sum256(e.secret)
		if want := "fingerprint " + hex.EncodeToString(sum[:]); !strings.Contains(r.stdout, want) {
			t.Fatalf("workload output lacks %q:\n%s", want, r.stdout)
		}
		if !strings.Contains(r.stdout, "secrets: db") {
			t.Fatalf("workload did not see /run/secrets/db:\n%s", r.stdout)
		}
	})

	t.Run("workload inputs: env, workdir, user, volumes and a web server on a forwarded port", func(t *testing.T) {
		// A CGI script answers the host's request and leaves a mark; the
		// workload then exits, so the one-shot launch ends by itself.
		script := strings.Join([]string{
			`read line; echo "stdin $line"`,
			`echo "env greeting=$GREETING extra=$EXTRA file=$FROMFILE pwd=$(pwd) id=$(id -u):$(id -g)"`,
			`echo "volume $(cat /data/hello.txt)"; touch /data/x 2>/dev/null || echo volume-read-only`,
			`echo scratch > /scratch/f && echo "tmpfs $(cat /scratch/f)"`,
			`echo on-disk > /work/f && echo "scratch disk $(cat /work/f)"`,
			`mkdir -p www/cgi-bin`,
			`printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho hello-from-the-guest\ntouch /tmp/served\n' > www/cgi-bin/hello`,
			`chmod +x www/cgi-bin/hello`,
			`httpd -p 8080 -h www && echo serving`,
			`while [ ! -e /tmp/served ]; do sleep 1; done; echo served`,
		}, "; ")
		e.must("launcher", "image", "build", "-o", e.path("web-image"), "--busybox", "sh,echo,id,pwd,mkdir,printf,chmod,touch,httpd,sleep,cat",
			"--entrypoint", "/bin/sh", "--cmd", "-c", "--cmd", script, "--env", "GREETING=image", "--env", "PATH=/bin")
		e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", e.path("web-image"))
		e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
			"--image", e.path("web-image"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "web",
			"-o", e.path("attestd/policies/web.yaml"))
		pol, err := os.ReadFile(e.path("attestd/policies/web.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		vol := e.path("volume")
		if err := os.MkdirAll(vol, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vol, "hello.txt"), []byte("from-the-host\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		pol = append(pol, []byte("\nenv:\n  keys: [GREETING, EXTRA, FROMFILE]\nnetwork:\n  allow: [user]\nvolumes:\n  allow: any\n  tmpfs: true\n  scratch: {max_size: 32m, paths: [/work]}\n"+
			"rules:\n  - name: app-user\n    expr: user == \"1000:1000\" && working_dir == \"/tmp/app\" && size(ports) == 1\n")...)
		if err := os.WriteFile(e.path("attestd/policies/web.yaml"), pol, 0o644); err != nil {
			t.Fatal(err)
		}
		e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
		if err := os.WriteFile(e.path("web.env"), []byte("# from a file\nFROMFILE=yes\nGREETING=file\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		flags := append([]string{"--env-file", e.path("web.env"), "-e", "GREETING=run", "-e", "EXTRA=a b",
			"-w", "/tmp/app", "--user", "1000:1000", "--net", "user", "-p", "127.0.0.1:0:8080",
			"--volume", vol + ":/data:ro", "--tmpfs", "/scratch:size=1m", "--scratch", "/work:size=32m", "-i"}, signer...)

		// Refused before boot where the policy allows neither (the "allow"
		// policy pins the other image too): env and network are named.
		r := e.launch(e.path("vmlinux"), e.path("web-image"), "allow", flags...)
		refused(t, r, "env: ", "network: ", "volumes: ")
		beforeBoot(t, r)
		// A scratch disk larger than the web policy allows is refused
		// before boot too, and so is one at another path: the launch
		// below, the same but for --scratch, passes. (A client that is not
		// an admin sees the reason's category only.)
		for _, flag := range []string{"/work:size=64m", "/elsewhere:size=16m"} {
			other := slices.Clone(flags)
			other[slices.Index(other, "--scratch")+1] = flag
			r = e.launch(e.path("vmlinux"), e.path("web-image"), "web", other...)
			refused(t, r, regexp.QuoteMeta("volumes: a volume is not allowed by the policy"))
			beforeBoot(t, r)
		}

		report := e.path("web-report.json")
		args := append([]string{"run", "-v", "--attestd", e.addr, "--ca", e.ca, "--policy", "web",
			"--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"), "--image", e.path("web-image"), "--report", report}, flags...)
		c := e.cmd("launcher", args...)
		so, se := &syncBuffer{}, &syncBuffer{}
		outR, outW := io.Pipe()
		errR, errW := io.Pipe()
		c.Stdout, c.Stderr, c.Stdin = outW, errW, strings.NewReader("typed-in\n")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		// Lines of one stream into buf, a match of re (its first group) sent once.
		follow := func(r io.Reader, buf *syncBuffer, re *regexp.Regexp, found chan<- string) {
			sc := bufio.NewScanner(r)
			sent := false
			for sc.Scan() {
				buf.WriteString(sc.Text() + "\n")
				if m := re.FindStringSubmatch(sc.Text()); m != nil && !sent {
					sent = true
					found <- m[len(m)-1]
				}
			}
			io.Copy(io.Discard, r)
		}
		port, serving := make(chan string, 1), make(chan string, 1)
		go follow(errR, se, regexp.MustCompile(`forwarding 127\.0\.0\.1:(\d+)->8080/tcp`), port)
		go follow(outR, so, regexp.MustCompile(`^serving$`), serving)
		exited := make(chan error, 1)
		go func() { err := c.Wait(); outW.Close(); errW.Close(); exited <- err }()
		var p string
		for _, ch := range []chan string{port, serving} {
			select {
			case v := <-ch:
				if ch == port {
					p = v
				}
			case err := <-exited:
				t.Fatalf("launcher exited before the web server served: %v\nstdout:\n%s\nstderr:\n%s", err, so.String(), se.String())
			case <-time.After(5 * time.Minute):
				c.Process.Kill()
				t.Fatalf("no web server in 5 minutes\nstdout:\n%s\nstderr:\n%s", so.String(), se.String())
			}
		}
		// httpd listens before it prints "serving": one request.
		resp, err := http.Get("http://127.0.0.1:" + p + "/cgi-bin/hello")
		if err != nil {
			c.Process.Kill()
			t.Fatalf("GET through the forward: %v\nstderr:\n%s", err, se.String())
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hello-from-the-guest\n" {
			t.Errorf("GET answered %q", body)
		}
		if err := <-exited; err != nil {
			t.Fatalf("launch: %v\nstdout:\n%s\nstderr:\n%s", err, so.String(), se.String())
		}
		for _, want := range []string{"stdin typed-in\n", "env greeting=run extra=a b file=yes pwd=/tmp/app id=1000:1000\n",
			"volume from-the-host\nvolume-read-only\ntmpfs scratch\nscratch disk on-disk\n"} {
			if !strings.Contains(so.String(), want) {
				t.Errorf("stdout lacks %q:\n%s", want, so.String())
			}
		}
		rep := readReport(t, report)
		if len(rep.Ports) != 1 || rep.Ports[0] != "127.0.0.1:"+p+"->8080/tcp" || rep.ExitCode != 0 {
			t.Errorf("--report: %+v", rep)
		}
	})

	t.Run("interrupted: the workload gets SIGTERM and its grace period, exit 130", func(t *testing.T) {
		report := e.path("interrupted-report.json")
		args := []string{"run", "-v", "--attestd", e.addr, "--ca", e.ca, "--policy", "anyargs",
			"--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"), "--image", e.path("image"),
			"--stop-timeout", "60s", "--report", report}
		args = append(append(args, signer...), "--", "/bin/sh", "-c",
			`trap 'echo got-TERM; exit 3' TERM; echo started; while :; do sleep 1; done`)
		c := e.cmd("launcher", args...)
		so := &syncBuffer{}
		pr, pw := io.Pipe()
		var se bytes.Buffer
		c.Stdout, c.Stderr = pw, &se
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		started := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(pr)
			once := false
			for sc.Scan() {
				so.WriteString(sc.Text() + "\n")
				if sc.Text() == "started" && !once {
					once = true
					close(started)
				}
			}
		}()
		exited := make(chan error, 1)
		go func() { exited <- c.Wait(); pw.Close() }()
		select {
		case <-started:
		case err := <-exited:
			t.Fatalf("launcher exited before the workload started: %v\nstdout:\n%s\nstderr:\n%s", err, so.String(), se.String())
		case <-time.After(5 * time.Minute):
			c.Process.Kill()
			t.Fatalf("the workload did not start in 5 minutes\nstderr:\n%s", se.String())
		}
		c.Process.Signal(os.Interrupt)
		err := <-exited
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Fatalf("exit %v, want 130\nstdout:\n%s\nstderr:\n%s", err, so.String(), se.String())
		}
		if !strings.Contains(so.String(), "got-TERM") {
			t.Fatalf("the workload did not get SIGTERM:\nstdout:\n%s\nstderr:\n%s", so.String(), se.String())
		}
		if !strings.Contains(se.String(), "interrupted: stopping the workload") || !strings.Contains(se.String(), "exited with code 3") {
			t.Errorf("stderr does not say the workload was stopped and how it exited:\n%s", se.String())
		}
		rep := readReport(t, report)
		if rep.ExitCode != 130 || !strings.Contains(rep.Error, "interrupted") || len(rep.SandboxID) != 32 {
			t.Errorf("--report: %+v", rep)
		}
		// One sandbox id everywhere: the report's is the one in the log lines.
		if !strings.Contains(se.String(), rep.SandboxID) {
			t.Errorf("the report's sandbox id %s is not in the launcher's output:\n%s", rep.SandboxID, se.String())
		}
	})

	t.Run("a terminal: run -i -t driven through a pseudo-terminal", func(t *testing.T) { testTerminal(t, e, signer) })

	t.Run("from a registry: signed by cosign sign, launched by digest and as a cosign save layout; an unsigned digest refused", func(t *testing.T) {
		cosign := cosigntest.Binary(t)
		srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
		defer srv.Close()
		host := strings.TrimPrefix(srv.URL, "http://")
		push := func(layoutDir, repo string) string { return pushLayout(t, host, layoutDir, repo, "latest") }
		signed := push(e.path("image"), "app")
		sign := exec.Command(cosign, "sign", "--key", e.path("cosign.key"), "--tlog-upload=false", "--allow-http-registry", "-y", signed)
		sign.Env = append(os.Environ(), "COSIGN_PASSWORD=e2e-password", "HOME="+t.TempDir())
		if out, err := sign.CombinedOutput(); err != nil {
			t.Fatalf("cosign sign: %v\n%s", err, out)
		}
		r := e.launch(e.path("vmlinux"), signed, "allow", append(signer, "--allow-http-registry")...)
		if r.code != 7 {
			t.Fatalf("launch of %s: exit %d, want the workload's 7\nstdout:\n%s\nstderr:\n%s", signed, r.code, r.stdout, r.stderr)
		}
		sum := sha256.Sum256(e.secret)
		if want := "fingerprint " + hex.EncodeToString(sum[:]); !strings.Contains(r.stdout, want) {
			t.Fatalf("workload output lacks %q:\n%s", want, r.stdout)
		}
		// 'cosign save' of the signed image: a layout holding the image and
		// its signature launches as it is.
		saved := e.path("cosign-saved")
		save := exec.Command(cosign, "save", "--allow-http-registry", "--dir", saved, signed)
		save.Env = append(os.Environ(), "HOME="+t.TempDir())
		if out, err := save.CombinedOutput(); err != nil {
			t.Fatalf("cosign save: %v\n%s", err, out)
		}
		r = e.launch(e.path("vmlinux"), saved, "allow", signer...)
		if r.code != 7 || !strings.Contains(r.stdout, "fingerprint "+hex.EncodeToString(sum[:])) {
			t.Fatalf("launch of a cosign save layout: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		// The same name, another (unsigned) digest: refused before boot.
		unsigned := push(e.path("other-image"), "app")
		r = e.launch(e.path("vmlinux"), unsigned, "allow", append(signer, "--allow-http-registry")...)
		refused(t, r, `none of the 0 cosign signature\(s\) in the registry verifies`)
		beforeBoot(t, r)
	})

	t.Run("refused by another policy before boot, with reasons", func(t *testing.T) {
		r := e.launch(e.path("vmlinux"), e.path("image"), "other", signer...)
		refused(t, r, `launch refused before boot: policy "other" does not allow it`, `image: .*not allowed`)
		beforeBoot(t, r)
	})

	t.Run("unknown policy", func(t *testing.T) {
		r := e.launch(e.path("vmlinux"), e.path("image"), "no-such-policy", signer...)
		refused(t, r, `launch refused before boot`, `no-such-policy`)
		beforeBoot(t, r)
	})

	t.Run("denied at attestation: host boot state", func(t *testing.T) {
		r := e.launch(e.path("vmlinux"), e.path("image"), "hostpcr", signer...)
		refused(t, r, `attestation denied by policy "hostpcr"`, `PCR 0`)
		if !strings.Contains(r.stderr, "booting the sandbox") {
			t.Fatalf("expected a boot before the denial:\n%s", r.stderr)
		}
	})

	// A tampered kernel: one byte changed, its old signature beside it.
	tampered := e.path("vmlinux-tampered")
	k, err := os.ReadFile(e.path("vmlinux"))
	if err != nil {
		t.Fatal(err)
	}
	k[len(k)/2] ^= 0x01
	if err := os.WriteFile(tampered, k, 0o644); err != nil {
		t.Fatal(err)
	}
	sig, err := os.ReadFile(e.path("vmlinux.sig"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tampered+".sig", sig, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("tampered kernel: refused before boot", func(t *testing.T) {
		r := e.launch(tampered, e.path("image"), "allow", signer...)
		refused(t, r, `kernel .*does not verify`)
		beforeBoot(t, r)
		if !strings.Contains(r.stderr, "verifying signatures") {
			t.Fatalf("the refusal did not come from the signature check:\n%s", r.stderr)
		}
	})
	t.Run("tampered kernel: refused by the policy when the launcher trusts no signer", func(t *testing.T) {
		r := e.launch(tampered, e.path("image"), "allow")
		refused(t, r, `launch refused before boot: policy "allow"`, `kernel: .*not allowed`)
		beforeBoot(t, r)
	})

	t.Run("tampered image layer: refused before boot", func(t *testing.T) {
		img := e.path("image-tampered")
		copyTree(t, e.path("image"), img)
		for _, s := range []string{".sig", ".payload.json"} {
			b, _ := os.ReadFile(e.path("image") + s)
			os.WriteFile(img+s, b, 0o644)
		}
		// The largest blob is the busybox layer: flip a byte in it.
		blobs, _ := filepath.Glob(filepath.Join(img, "blobs", "sha256", "*"))
		var biggest string
		var size int64
		for _, b := range blobs {
			if fi, err := os.Stat(b); err == nil && fi.Size() > size {
				biggest, size = b, fi.Size()
			}
		}
		data, err := os.ReadFile(biggest)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 0x01
		os.Chmod(biggest, 0o644)
		if err := os.WriteFile(biggest, data, 0o644); err != nil {
			t.Fatal(err)
		}
		r := e.launch(e.path("vmlinux"), img, "allow", signer...)
		refused(t, r, `image`, filepath.Base(biggest)[:12])
		beforeBoot(t, r)
	})

	// The same image, re-signed by a key nobody trusts.
	rogue := e.path("image-rogue")
	copyTree(t, e.path("image"), rogue)
	e.must("launcher", "keygen", "--output-key-prefix", e.path("rogue"))
	e.must("launcher", "sign", "--key", e.path("rogue.key"), "--image", rogue)
	t.Run("wrong signer: refused before boot", func(t *testing.T) {
		report := e.path("rogue-report.json")
		r := e.launch(e.path("vmlinux"), rogue, "allow", append(signer, "--report", report)...)
		refused(t, r, `image .*does not verify with any trusted signer`)
		beforeBoot(t, r)
		rep := readReport(t, report)
		if rep.ExitCode != 125 || !strings.Contains(rep.Error, "does not verify with any trusted signer") ||
			rep.AttestationID != "" || rep.QEMUPeakRSSMiB != 0 || len(rep.Secrets) != 0 {
			t.Errorf("--report of a refused launch: %+v", rep)
		}
	})
	t.Run("wrong signer: refused by the policy when the launcher trusts no signer", func(t *testing.T) {
		r := e.launch(e.path("vmlinux"), rogue, "allow")
		refused(t, r, `launch refused before boot: policy "allow"`, `image: .*signature`)
		beforeBoot(t, r)
	})

	t.Run("a VM template: clones receive their secret; refused by a cold-only policy and when modified", func(t *testing.T) {
		out := e.must("launcher", "template", "create", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"), "--name", "e2e")
		if !strings.Contains(out, "template e2e (") {
			t.Fatalf("template create: %s", out)
		}
		if ls := e.must("launcher", "template", "ls"); !strings.Contains(ls, "e2e") {
			t.Fatalf("template ls: %s", ls)
		}
		report := e.path("clone-report.json")
		r := e.launch(e.path("vmlinux"), e.path("image"), "allow", append(signer, "--report", report)...)
		sum := sha256.Sum256(e.secret)
		if r.code != 7 || !strings.Contains(r.stdout, "fingerprint "+hex.EncodeToString(sum[:])) {
			t.Fatalf("clone launch: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stderr, `cloning from template "e2e"`) {
			t.Errorf("the launch does not say it clones:\n%s", r.stderr)
		}
		if rep := readReport(t, report); rep.Template != "e2e" || rep.StartMillis <= 0 || rep.ExitCode != 7 {
			t.Errorf("--report: %+v", rep)
		}
		// --template none boots cold; a cold-only policy refuses the clone
		// before boot (the preflight names the template; attestation would
		// too, from the event) and passes a cold boot.
		r = e.launch(e.path("vmlinux"), e.path("image"), "coldonly", signer...)
		refused(t, r, `launch refused before boot: policy "coldonly"`, `templates: the policy does not allow a clone`)
		beforeBoot(t, r)
		r = e.launch(e.path("vmlinux"), e.path("image"), "coldonly", append(signer, "--template", "none")...)
		if r.code != 7 || strings.Contains(r.stderr, "cloning") {
			t.Fatalf("cold launch: exit %d\nstderr:\n%s", r.code, r.stderr)
		}
		// One byte of the template's RAM changed on disk: refused before boot.
		var tpls []struct {
			Dir string `json:"dir"`
		}
		if err := json.Unmarshal([]byte(e.must("launcher", "template", "ls", "--json")), &tpls); err != nil || len(tpls) != 1 {
			t.Fatalf("template ls --json: %v", err)
		}
		f, err := os.OpenFile(filepath.Join(tpls[0].Dir, "ram"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte{0x5a}, 1<<20)
		f.Close()
		r = e.launch(e.path("vmlinux"), e.path("image"), "allow", signer...)
		refused(t, r, `ram modified after the template was made`)
		if strings.Contains(r.stderr, "resuming a clone") {
			t.Errorf("a modified template was resumed:\n%s", r.stderr)
		}
		if out := e.must("launcher", "template", "rm", "e2e"); !strings.Contains(out, "removed template e2e") {
			t.Errorf("template rm: %s", out)
		}
	})

	t.Run("audit log records every verdict and verifies", func(t *testing.T) {
		out := e.must("attestd", append(append([]string{"ctl"}, e.admin...), "audit", "verify")...)
		if !strings.Contains(strings.ToLower(out), "ok") {
			t.Fatalf("audit verify: %s", out)
		}
		log := e.must("attestd", append(append([]string{"ctl"}, e.admin...), "audit", "--all")...)
		for _, w := range []string{`"allow":true`, `"allow":false`, "\trelease\t", "\tenroll\t"} {
			if !strings.Contains(log, w) {
				t.Errorf("audit log has no %q record:\n%s", w, log)
			}
		}
		if strings.Contains(log, string(e.secret)) {
			t.Fatal("the audit log holds the secret's plaintext")
		}
	})
}

// BenchmarkLaunchMemory launches through the real binaries (launcher run,
// attestd, the managed swtpm, QEMU with a 256 MiB guest, as in
// kvm.BenchmarkLaunchVsBareQEMU's bare baseline) and reports what one
// sandbox costs in memory, from launcher run --report: QEMU's peak RSS and
// the launcher's own. A launcher process serves one sandbox, so its whole
// peak is the sandbox's share. Run with -benchtime 3x.
func BenchmarkLaunchMemory(b *testing.B) {
	e := setup(b)
	var qemu, launcher float64
	for i := 0; b.Loop(); i++ { // b.Loop: one setup, not one for a probe run too
		report := e.path(fmt.Sprintf("bench-report-%d.json", i))
		r := e.launch(e.path("vmlinux"), e.path("image"), "allow", "--signer", e.path("cosign.pub"), "--memory", "256", "--report", report)
		if r.code != 7 {
			b.Fatalf("exit code %d, want the workload's 7\nstderr:\n%s", r.code, r.stderr)
		}
		rep := readReport(b, report)
		if i == 0 {
			b.Logf("accelerator %s", rep.Accelerator)
		}
		qemu, launcher = max(qemu, rep.QEMUPeakRSSMiB), max(launcher, rep.LauncherPeakRSSMiB)
	}
	b.ReportMetric(qemu, "qemu-rss-MiB")
	b.ReportMetric(launcher, "launcher-rss-MiB")
	b.ReportMetric(qemu+launcher, "sandbox-rss-MiB")
	b.ReportMetric(0, "ns/op")
}

// pushLayout pushes the one image of the OCI layout layoutDir to the
// registry at host as REPO:TAG, as 'crane push' does, and returns
// HOST/REPO@DIGEST.
func pushLayout(t *testing.T, host, layoutDir, repo, tag string) string {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("layout %s: %v", layoutDir, err)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(host+"/"+repo+":"+tag, name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return host + "/" + repo + "@" + m.Manifests[0].Digest.String()
}
