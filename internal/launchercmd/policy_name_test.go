package launchercmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPolicyInitName: a policy name taken from -o that is not a valid name
// is a usage error that says where the name came from and suggests --name;
// so is a bad --name. Both are found before the kernel is read.
func TestPolicyInitName(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "no-such-vmlinux")
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		want     string // in stderr
		out      string // the file -o names (relative to dir)
		wantName string // "name: …" in the written policy
	}{
		{"name from -o", []string{"--kernel", kernel, "-o", "My-Policy.yaml"}, 2,
			`the policy name "My-Policy", taken from -o ` + filepath.Join(dir, "My-Policy.yaml") + ", is not a valid policy name", "My-Policy.yaml", ""},
		{"name from -o suggests --name", []string{"--kernel", kernel, "-o", "My Policy.yml"}, 2, "give one with --name, e.g. --name my-policy", "My Policy.yml", ""},
		{"checked before the kernel is read", []string{"--kernel", missing, "-o", "UPPER.yaml"}, 2, "taken from -o", "UPPER.yaml", ""},
		{"bad --name", []string{"--kernel", kernel, "--name", "Bad Name"}, 2, `--name "Bad Name" is not a valid policy name`, "", ""},
		{"--name overrides a bad -o", []string{"--kernel", kernel, "-o", "Other-Policy.yaml", "--name", "ok"}, 0, "", "Other-Policy.yaml", "ok"},
		{"valid name from -o", []string{"--kernel", kernel, "-o", "app.yaml"}, 0, "", "app.yaml", "app"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"policy", "init"}, tc.args...)
			for i, a := range args {
				if i > 0 && args[i-1] == "-o" {
					args[i] = filepath.Join(dir, a)
				}
			}
			_, stderr, code := runLauncher(t, nil, args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, want %d; stderr %q, want it to contain %q", code, tc.code, stderr, tc.want)
			}
			if tc.out == "" {
				return
			}
			b, err := os.ReadFile(filepath.Join(dir, tc.out))
			if tc.code != 0 {
				if err == nil {
					t.Errorf("%s was written", tc.out)
				}
				return
			}
			if err != nil || !strings.Contains(string(b), "name: "+tc.wantName+"\n") {
				t.Errorf("%s: %v\n%s", tc.out, err, b)
			}
		})
	}
}
