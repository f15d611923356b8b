package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ctlSandbox is one row of 'attestd ctl sandboxes --json'.
type ctlSandbox struct {
	NodeID    string   `json:"node_id"`
	SandboxID string   `json:"sandbox_id"`
	Policy    string   `json:"policy"`
	Verdict   string   `json:"verdict"`
	Reasons   []string `json:"reasons"`
}

// ctlSandboxes lists what attestd keeps, by sandbox id.
func (e *env) ctlSandboxes(t *testing.T) map[string]ctlSandbox {
	t.Helper()
	out := e.must("attestd", append(append([]string{"ctl"}, e.admin...), "sandboxes", "--json")...)
	var r struct {
		Sandboxes []ctlSandbox `json:"sandboxes"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("ctl sandboxes --json: %v\n%s", err, out)
	}
	m := map[string]ctlSandbox{}
	for _, s := range r.Sandboxes {
		m[s.SandboxID] = s
	}
	return m
}

// eventually polls cond until it holds, or fails the test after the
// deadline with what was last seen. It is the only waiting here: no
// sleep stands for an event.
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last seen:\n%s", what, within, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runDetachedWith is 'launcher run -d' of image under policy.
func (e *env) runDetachedWith(t *testing.T, policy, image string) string {
	t.Helper()
	c := e.cmd("launcher", "run", "-d", "--policy", policy, "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", image, "--signer", e.path("cosign.pub"), "--template", "none", "--stop-timeout", "3s")
	var so, se bytes.Buffer
	c.Stdout, c.Stderr = &so, &se
	if err := c.Run(); err != nil {
		t.Fatalf("run -d: %v\nstdout:\n%s\nstderr:\n%s", err, so.String(), se.String())
	}
	return strings.TrimSpace(so.String())
}

// Continuous attestation through the real binaries (attestd, launcher
// daemon, swtpm, QEMU): the daemon re-attests its sandboxes every 2 s;
// a new secret version reaches a running guest; a daemon that stops
// re-attesting leaves its sandboxes stale in attestd (never allowed) until
// it resumes; a policy change removes the secret from a running guest
// (on_revoke: wipe-secrets, the workload runs on); revoking the node
// removes it and stops the workload (on_revoke: stop, the default).
func TestDaemonContinuousAttestation(t *testing.T) {
	e := setup(t)
	// The workload prints a digest of its secret every second, or "gone".
	e.must("launcher", "image", "build", "-o", e.path("watch-image"), "--busybox", "sh,echo,sha256sum,cut,sleep",
		"--entrypoint", "/bin/sh", "--cmd", "-c",
		"--cmd", `while :; do s=$(sha256sum /run/secrets/db 2>/dev/null | cut -c1-16); echo "db ${s:-gone}"; sleep 1; done`)
	e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", e.path("watch-image"))
	e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", e.path("watch-image"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "cont",
		"-o", e.path("attestd/policies/cont.yaml"))
	cont, err := os.ReadFile(e.path("attestd/policies/cont.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	wipe := strings.Replace(string(cont), "name: cont", "name: contwipe", 1) + "\non_revoke: wipe-secrets\n"
	if err := os.WriteFile(e.path("attestd/policies/contwipe.yaml"), []byte(wipe), 0o644); err != nil {
		t.Fatal(err)
	}
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
	digest := func(v []byte) string {
		s := sha256.Sum256(v)
		return "db " + hex.EncodeToString(s[:])[:16]
	}
	logs := func(id string) string { return e.must("launcher", "logs", id) }

	d := e.startDaemon(t, "--reattest-interval", "2s")
	a := e.runDetachedWith(t, "cont", "watch-image")
	b := e.runDetachedWith(t, "contwipe", "watch-image")
	for _, id := range []string{a, b} {
		eventually(t, 60*time.Second, "the sandbox prints its secret", func() (bool, string) {
			l := logs(id)
			return strings.Contains(l, digest(e.secret)), l
		})
	}

	t.Run("re-attested by the daemon", func(t *testing.T) {
		eventually(t, 30*time.Second, "attestd keeps both, allowed, and the daemon saw a re-attestation", func() (bool, string) {
			sbs, ps := e.ctlSandboxes(t), e.ps(t, false)
			out, _ := json.Marshal([]any{sbs, ps})
			return sbs[a].Verdict == "allow" && sbs[b].Verdict == "allow" && strings.Contains(e.must("launcher", "inspect", a), `"last_verdict": "allow"`), string(out)
		})
	})

	t.Run("a new secret version reaches the running guests", func(t *testing.T) {
		v2 := []byte("rotated-" + e.path(""))
		if err := os.WriteFile(e.path("secret2"), v2, 0o600); err != nil {
			t.Fatal(err)
		}
		e.must("attestd", append(append([]string{"ctl"}, e.admin...), "secret", "put", "db", "--from-file", e.path("secret2"))...)
		for _, id := range []string{a, b} {
			eventually(t, 30*time.Second, "the rotated secret in the guest", func() (bool, string) {
				l := logs(id)
				return strings.Contains(l, digest(v2)), l
			})
		}
	})

	t.Run("stale while the daemon does not re-attest, never allowed", func(t *testing.T) {
		if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		stopped := true
		defer func() {
			if stopped {
				d.cmd.Process.Signal(syscall.SIGCONT)
			}
		}()
		eventually(t, 30*time.Second, "attestd reports them stale", func() (bool, string) {
			sbs := e.ctlSandboxes(t)
			out, _ := json.Marshal(sbs)
			return sbs[a].Verdict == "stale" && sbs[b].Verdict == "stale", string(out)
		})
		table := e.must("attestd", append(append([]string{"ctl"}, e.admin...), "sandboxes")...)
		if !strings.Contains(table, "stale") || strings.Contains(table, " allow ") {
			t.Fatalf("ctl sandboxes while stale:\n%s", table)
		}
		d.cmd.Process.Signal(syscall.SIGCONT)
		stopped = false
		eventually(t, 30*time.Second, "fresh again once the daemon re-attests", func() (bool, string) {
			sbs := e.ctlSandboxes(t)
			out, _ := json.Marshal(sbs)
			return sbs[a].Verdict == "allow" && sbs[b].Verdict == "allow", string(out)
		})
	})

	t.Run("a policy change removes the secret; wipe-secrets keeps the workload", func(t *testing.T) {
		// The image the policy allows is no longer this one.
		changed := wipe
		i := strings.Index(changed, "\nimage:\n")
		j := strings.Index(changed[i:], "sha256:")
		if i < 0 || j < 0 {
			t.Fatalf("no image digest in the policy:\n%s", changed)
		}
		changed = changed[:i+j] + "sha256:" + strings.Repeat("0", 64) + changed[i+j+71:]
		if err := os.WriteFile(e.path("attestd/policies/contwipe.yaml"), []byte(changed), 0o644); err != nil {
			t.Fatal(err)
		}
		e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
		eventually(t, 30*time.Second, "the secret gone from the guest", func() (bool, string) {
			l := logs(b)
			return strings.HasSuffix(strings.TrimSpace(l), "db gone"), l
		})
		if got := e.ps(t, false)[b]; got.Status != "running" {
			t.Fatalf("wipe-secrets stopped the workload: %+v", got)
		}
		if v := e.ctlSandboxes(t)[b].Verdict; v != "revoked" {
			t.Fatalf("attestd: %s, want revoked", v)
		}
		if !strings.Contains(e.must("launcher", "inspect", b), `"revoked": "judged again after a policy change`) {
			t.Errorf("inspect does not say it was revoked:\n%s", e.must("launcher", "inspect", b))
		}
		if v := e.ctlSandboxes(t)[a].Verdict; v != "allow" {
			t.Fatalf("the other policy's sandbox: %s", v)
		}
	})

	t.Run("revoking the node removes the secret and stops the workload", func(t *testing.T) {
		node := e.ctlSandboxes(t)[a].NodeID
		e.must("attestd", append(append([]string{"ctl"}, e.admin...), "nodes", "revoke", node)...)
		eventually(t, 30*time.Second, "the workload stopped", func() (bool, string) {
			got := e.ps(t, true)[a]
			out, _ := json.Marshal(got)
			return got.Status == "exited", string(out)
		})
		if got := e.ps(t, true)[a]; got.ExitCode != 143 {
			t.Errorf("exit code %d, want 143 (SIGTERM)", got.ExitCode)
		}
		if !strings.Contains(d.log.String(), "secrets removed from the guest") || !strings.Contains(d.log.String(), "sandbox="+a) {
			t.Errorf("the daemon did not log the removal:\n%s", d.log.String())
		}
		if v := e.ctlSandboxes(t)[a].Verdict; v != "revoked" {
			t.Fatalf("attestd: %s, want revoked", v)
		}
	})
}
