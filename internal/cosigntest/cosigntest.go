// Package cosigntest finds the cosign CLI for the tests that use it as an
// independent verifier or signer (scripts/install-cosign.sh installs it).
package cosigntest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Binary returns the cosign CLI: on PATH, in GOBIN, in each GOPATH's bin,
// or in ~/go/bin. Without one the test is skipped, saying how to install it.
func Binary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("cosign"); err == nil {
		return p
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, d := range filepath.SplitList(strings.TrimSpace(string(out))) {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "cosign")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Skip("cosign not installed: run scripts/install-cosign.sh")
	return ""
}
