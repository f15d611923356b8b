package tpm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAccessWarning(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{
		{0o600, false},
		{0o660, false},
		{0o700, false},
		{0o664, true},
		{0o606, true},
		{0o701, true},
	} {
		p := filepath.Join(dir, tc.mode.String())
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, tc.mode); err != nil {
			t.Fatal(err)
		}
		got := accessWarning(p)
		if (got != "") != tc.warn {
			t.Errorf("mode %04o: warning %q, want one: %v", tc.mode, got, tc.warn)
		}
		if tc.warn && !strings.Contains(got, "docs/security.md") {
			t.Errorf("warning %q does not say where to read more", got)
		}
	}
	if got := accessWarning(filepath.Join(dir, "missing")); got != "" {
		t.Errorf("missing path: %q", got)
	}
	tp := &TPM{spec: Spec{Kind: KindDevice, Path: filepath.Join(dir, "-rw-rw-r--")}}
	if tp.AccessWarning() == "" {
		t.Error("a world-readable device gave no warning")
	}
}
