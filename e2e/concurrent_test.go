package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Twenty launches at once on one host, through the host service, each a
// clone of one template: all are allowed, all run, and the daemon's
// re-attestation (one quote for all) keeps every one attested.
func TestDaemonTwentyConcurrentClones(t *testing.T) {
	const n = 20
	e := setup(t)
	e.must("launcher", "image", "build", "-o", e.path("idle-image"), "--busybox", "sh,echo,sleep",
		"--entrypoint", "/bin/sh", "--cmd", "-c", "--cmd", `echo up; while :; do sleep 1; done`)
	e.must("launcher", "sign", "--key", e.path("cosign.key"), "--image", e.path("idle-image"))
	e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
		"--image", e.path("idle-image"), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", "idle",
		"-o", e.path("attestd/policies/idle.yaml"))
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
	e.must("launcher", "template", "create", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"), "--name", "idle")
	e.startDaemon(t, "--reattest-interval", "2s")

	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := e.cmd("launcher", "run", "-d", "--policy", "idle", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
				"--image", "idle-image", "--signer", e.path("cosign.pub"), "--stop-timeout", "2s")
			out, err := c.Output()
			if err != nil {
				var stderr []byte
				if ee, ok := err.(*exec.ExitError); ok {
					stderr = ee.Stderr
				}
				errs[i] = fmt.Errorf("launch %d: %v\n%s", i, err, stderr)
				return
			}
			ids[i] = strings.TrimSpace(string(out))
			e.killOnCleanup(t, ids[i])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	running := e.ps(t, false)
	if len(running) != n {
		t.Fatalf("ps lists %d running sandboxes, want %d", len(running), n)
	}
	for _, id := range ids {
		if running[id].Status != "running" || running[id].Template != "idle" {
			t.Errorf("%s: %+v, want running, a clone of template idle", id, running[id])
		}
	}
	eventually(t, 120*time.Second, "every sandbox re-attested and allowed", func() (bool, string) {
		kept := e.ctlSandboxes(t)
		var bad []string
		for _, id := range ids {
			var in struct {
				LastVerdict string `json:"last_verdict"`
			}
			json.Unmarshal([]byte(e.must("launcher", "inspect", id)), &in)
			if kept[id].Verdict != "allow" || in.LastVerdict != "allow" {
				bad = append(bad, fmt.Sprintf("%s: attestd %q, daemon %q", id, kept[id].Verdict, in.LastVerdict))
			}
		}
		return len(bad) == 0, strings.Join(bad, "\n")
	})
	// ps -q lists exactly them, for scripts: stop them all that way.
	quiet := strings.Fields(e.must("launcher", "ps", "-q"))
	if len(quiet) != n {
		t.Fatalf("ps -q: %d ids, want %d", len(quiet), n)
	}
	e.must("launcher", append([]string{"stop", "--time", "2s"}, quiet...)...)
	if left := strings.TrimSpace(e.must("launcher", "ps", "-q")); left != "" {
		t.Errorf("still running after stop: %s", left)
	}
}
