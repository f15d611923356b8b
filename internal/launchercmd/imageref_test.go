package launchercmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An --image that is not on disk and reads as a registry reference is a
// usage error saying images are local files and how to fetch one (it
// used to be "image docker.io/...: stat ...: no such file or directory"),
// in every command that takes --image. A missing path that reads as a
// path still fails on the path, and an existing file is used whatever its
// name looks like.
func TestImageRegistryReference(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	kernel := filepath.Join(dir, "vmlinux")
	os.WriteFile(kernel, []byte("kernel"), 0o644)
	os.MkdirAll(filepath.Join(dir, "ghcr.io", "me"), 0o755)
	os.WriteFile(filepath.Join(dir, "ghcr.io", "me", "img.tar"), []byte("not an image"), 0o644)
	env := map[string]string{"BULWARK_STATE": filepath.Join(dir, "state")}
	commands := map[string][]string{
		// run pulls a registry reference itself (TestRunPullsFromRegistry).
		"measure":     {"measure", "--kernel", kernel, "--image"},
		"policy init": {"policy", "init", "--kernel", kernel, "-o", filepath.Join(dir, "p.yaml"), "--image"},
		"sign":        {"sign", "--key", filepath.Join(dir, "cosign.key"), "--image"},
		"verify":      {"verify", "--key", filepath.Join(dir, "cosign.pub"), "--image"},
	}
	for _, tc := range []struct {
		image string
		ref   bool
	}{
		{"docker.io/library/alpine:3.20", true},
		{"alpine:3.20", true},
		{"ghcr.io/me/app", true},
		{"localhost:5000/app", true},
		{"docker://alpine", true},
		{"app@sha256:0123abcd", true},
		{"image-dir", false},
		{"./alpine:3.20", false},
		{filepath.Join(dir, "missing:1"), false},
		{"ghcr.io/me/img.tar", false}, // exists: read as a file
	} {
		for name, args := range commands {
			t.Run(name+"/"+tc.image, func(t *testing.T) {
				_, stderr, code := runLauncher(t, env, append(append([]string{}, args...), tc.image)...)
				hint := strings.Contains(stderr, "reads as a registry reference")
				if tc.ref != hint || (tc.ref && (code != 2 || !strings.Contains(stderr, "launcher image pull") || !strings.Contains(stderr, "--image "+tc.image))) {
					t.Fatalf("exit %d, registry hint %v, want %v:\n%s", code, hint, tc.ref, stderr)
				}
				if code == 0 {
					t.Fatalf("succeeded:\n%s", stderr)
				}
			})
		}
	}
}
