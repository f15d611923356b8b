package launchercmd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/cli"
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
	state := filepath.Join(dir, "state")
	var out, errb bytes.Buffer
	env := &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""),
		Getenv: func(k string) string {
			if k == "BULWARK_STATE" {
				return state
			}
			return ""
		}}
	code := Program.Main(context.Background(), env, []string{"run", "--attestd", "127.0.0.1:1", "--ca", ca,
		"--policy", "p", "--image", dir, "--report", filepath.Join(dir, "missing", "report.json")})
	if code == 0 || code == ExitLaunchFailed || !strings.Contains(errb.String(), "--report") || !strings.Contains(errb.String(), "no such file") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	if strings.Contains(errb.String(), "measuring") || strings.Contains(errb.String(), "booting") {
		t.Errorf("the launch started: %s", errb.String())
	}
}
