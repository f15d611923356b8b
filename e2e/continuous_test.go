package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/measure"
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
func (e *env) ctlSandboxes(t testing.TB) map[string]ctlSandbox {
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
func eventually(t testing.TB, within time.Duration, what string, cond func() (bool, string)) {
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
func (e *env) runDetachedWith(t testing.TB, policy, image string, extra ...string) string {
	t.Helper()
	c := e.cmd("launcher", "run", "-d", "--policy", policy, "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", image, "--signer", e.path("cosign.pub"), "--template", "none", "--stop-timeout", "3s")
	c.Args = append(c.Args, extra...)
	var so, se bytes.Buffer
	c.Stdout, c.Stderr = &so, &se
	if err := c.Run(); err != nil {
		t.Fatalf("run -d: %v\nstdout:\n%s\nstderr:\n%s", err, so.String(), se.String())
	}
	id := strings.TrimSpace(so.String())
	e.killOnCleanup(t, id)
	return id
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

	t.Run("a stopped sandbox's END is in the launch log and attestd reports it ended", func(t *testing.T) {
		e.must("launcher", "stop", "--time", "3s", b)
		if got := e.endRecords(t)[b]; got != "stopped" {
			t.Fatalf("END record of the stopped sandbox: %q, want stopped (all: %v)", got, e.endRecords(t))
		}
		eventually(t, 30*time.Second, "attestd reports it ended after the daemon's next re-attestation", func() (bool, string) {
			sbs := e.ctlSandboxes(t)
			out, _ := json.Marshal(sbs)
			return sbs[b].Verdict == "ended" && strings.Contains(strings.Join(sbs[b].Reasons, " "), "END record"), string(out)
		})
		table := e.must("attestd", append(append([]string{"ctl"}, e.admin...), "sandboxes")...)
		if !strings.Contains(table, "ended") {
			t.Fatalf("ctl sandboxes does not show it ended:\n%s", table)
		}
		if v := e.ctlSandboxes(t)[a].Verdict; v != "allow" {
			t.Fatalf("the sandbox still running: %s, want allow", v)
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
		if got := e.endRecords(t)[a]; got != "revoked" {
			t.Fatalf("END record of the revoked sandbox: %q, want revoked", got)
		}
	})
}

// endRecords reads the host's launch log: the reason of each END record,
// by sandbox id.
func (e *env) endRecords(t testing.TB) map[string]string {
	t.Helper()
	lg, err := measure.ReadLogFile(filepath.Join(e.state, "launch", "launch.cel"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, r := range lg.Records() {
		if r.End != nil {
			m[r.End.SandboxID] = r.End.Reason
		}
	}
	return m
}

// revocationSetup writes the "watch-image" image, and n policies rv-0..rv-n-1
// for it (the secret db, on_revoke: wipe-secrets), and returns their text.
func (e *env) revocationSetup(t testing.TB, n int) []string {
	t.Helper()
	e.must("launcher", "image", "build", "-o", e.path("watch-image"), "--busybox", "sh,echo,sha256sum,cut,sleep",
		"--entrypoint", "/bin/sh", "--cmd", "-c",
		"--cmd", `while :; do s=$(sha256sum /run/secrets/db 2>/dev/null | cut -c1-16); echo "db ${s:-gone}"; sleep 1; done`)
	e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", e.path("watch-image"))
	e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", e.path("watch-image"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "rv",
		"-o", e.path("rv.yaml"))
	base, err := os.ReadFile(e.path("rv.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := range n {
		p := strings.Replace(string(base), "name: rv", "name: rv-"+strconv.Itoa(i), 1) + "\non_revoke: wipe-secrets\n"
		if err := os.WriteFile(e.path("attestd/policies/rv-"+strconv.Itoa(i)+".yaml"), []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
	return out
}

// removedAt finds, in the daemon's log, when it heard from the guest of
// sandbox id that its secrets were removed (the slog time of that line).
func removedAt(log, id string) (time.Time, bool) {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "secrets removed from the guest") || !strings.Contains(line, "sandbox="+id) {
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		ts, ok := strings.CutPrefix(f[0], "time=")
		if !ok {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, ts)
		return at, err == nil
	}
	return time.Time{}, false
}

// pct is the nearest-rank percentile p (0..100) of ds, in ms.
func pct(ds []time.Duration, p float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return float64(s[max(i, 0)]) / float64(time.Millisecond)
}

// BenchmarkRevocationToGuest: a policy change to secrets gone in the
// running guest, through the binaries on loopback: the admin writes a
// policy that no longer allows a running sandbox and asks attestd to
// reload (ctl policies reload); attestd judges the kept sandboxes again,
// pushes the revocation over WatchNode; the daemon sends REVOKE; the
// agent unlinks /run/secrets/* and answers. The time runs from before the
// policy file is written to the daemon's log line of the guest's answer.
// Baseline, same run: the same admin call when it revokes nothing.
// BULWARK_BENCH_REVOCATIONS sandboxes (default 8), one revocation each.
func BenchmarkRevocationToGuest(b *testing.B) {
	e := setup(b)
	n := 8
	if v, err := strconv.Atoi(os.Getenv("BULWARK_BENCH_REVOCATIONS")); err == nil && v > 0 {
		n = v
	}
	pols := e.revocationSetup(b, n)
	d := e.startDaemon(b, "--reattest-interval", "60s")
	ids := make([]string, n)
	for i := range n {
		ids[i] = e.runDetachedWith(b, "rv-"+strconv.Itoa(i), "watch-image", "--memory", "256")
	}
	for _, id := range ids {
		eventually(b, 120*time.Second, "the sandbox reads its secret", func() (bool, string) {
			l := e.must("launcher", "logs", id)
			return strings.Contains(l, "db ") && !strings.Contains(l, "db gone"), l
		})
	}
	var revoke, baseline []time.Duration
	for b.Loop() {
		if len(revoke) > 0 {
			continue // each sandbox is revoked once: one pass
		}
		for i, id := range ids {
			t0 := time.Now()
			e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
			baseline = append(baseline, time.Since(t0))

			p := pols[i]
			j := strings.Index(p, "\nimage:\n")
			k := strings.Index(p[j:], "sha256:")
			p = p[:j+k] + "sha256:" + strings.Repeat("0", 64) + p[j+k+71:]
			t0 = time.Now()
			if err := os.WriteFile(e.path("attestd/policies/rv-"+strconv.Itoa(i)+".yaml"), []byte(p), 0o644); err != nil {
				b.Fatal(err)
			}
			e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
			var at time.Time
			eventually(b, 30*time.Second, "the guest's secrets removed", func() (bool, string) {
				var ok bool
				at, ok = removedAt(d.log.String(), id)
				return ok, d.log.String()
			})
			revoke = append(revoke, at.Sub(t0))
		}
	}
	b.Logf("revocation to secrets gone (ms): %v; baseline admin call (ms): %v", revoke, baseline)
	b.ReportMetric(pct(revoke, 50), "revoke-p50-ms")
	b.ReportMetric(pct(revoke, 99), "revoke-p99-ms")
	b.ReportMetric(pct(baseline, 50), "baseline-p50-ms")
	b.ReportMetric(pct(baseline, 99), "baseline-p99-ms")
	b.ReportMetric(float64(len(revoke)), "revocations")
	b.ReportMetric(0, "ns/op")
}
