package launchercmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunReportPathCheckedFirst: a --report path that cannot be written
// stops `launcher run` before anything is measured or booted, and says so.
// (The report's content is checked by the end-to-end tests in e2e/, for an
// allowed and a refused launch.)
func TestRunReportPathCheckedFirst(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("not read before the launch starts"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runLauncher(t, map[string]string{"BULWARK_STATE": filepath.Join(dir, "state")}, "run", "-v", // -v: progress would show a launch that started
		"--attestd", "127.0.0.1:1", "--ca", ca, "--policy", "p", "--image", dir, "--report", filepath.Join(dir, "missing", "report.json"))
	if code == 0 || code == ExitLaunchFailed || !strings.Contains(stderr, "--report") || !strings.Contains(stderr, "no such file") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if strings.Contains(stderr, "measuring") || strings.Contains(stderr, "booting") {
		t.Errorf("the launch started: %s", stderr)
	}
}
