package launchercmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVerifyFileArgument: verify checks its FILE before looking for a
// signature, so a missing file and a directory say what is wrong with the
// argument instead of "missing signature".
func TestVerifyFileArgument(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{passwordEnv: "pw"}
	prefix := filepath.Join(dir, "cosign")
	if _, stderr, code := runLauncher(t, env, "keygen", "--output-key-prefix", prefix); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, stderr)
	}
	pub := prefix + ".pub"
	unsigned := filepath.Join(dir, "unsigned")
	imageDir := filepath.Join(dir, "app")
	signedDir := filepath.Join(dir, "signed-dir")
	for _, d := range []string{imageDir, signedDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for path, data := range map[string]string{unsigned: "data", signedDir + ".sig": "c2ln", filepath.Join(dir, "gone.sig"): "c2ln"} {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, file string
		code       int
		want       string
	}{
		{"missing file", filepath.Join(dir, "missing"), 1, "verify " + filepath.Join(dir, "missing") + ": stat"},
		{"missing file with a .sig beside it", filepath.Join(dir, "gone"), 1, "no such file or directory (give the file that was signed)"},
		{"directory", imageDir, 2, imageDir + " is a directory: verify an image with --image " + imageDir},
		{"directory with a .sig beside it", signedDir, 2, "is a directory: verify an image with --image"},
		{"unsigned file", unsigned, 1, "missing signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runLauncher(t, nil, "verify", "--key", pub, tc.file)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, want %d; stderr %q, want it to contain %q", code, tc.code, stderr, tc.want)
			}
			if tc.code != 1 || tc.want != "missing signature" {
				if strings.Contains(stderr, "missing signature") || stdout != "" {
					t.Errorf("stdout %q, stderr %q: the argument's problem was reported as a signature problem", stdout, stderr)
				}
			}
		})
	}
	// sign treats a directory the same way.
	_, stderr, code := runLauncher(t, env, "sign", "--key", prefix+".key", imageDir)
	if code != 2 || !strings.Contains(stderr, imageDir+" is a directory: sign an image with --image "+imageDir) {
		t.Fatalf("sign DIR: exit %d, stderr %q", code, stderr)
	}
}

// TestSignImageErrorNamesTheImageOnce: an image that cannot be opened is
// named once ("image X: ..."), not "image X: image X: ...".
func TestSignImageErrorNamesTheImageOnce(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{passwordEnv: "pw"}
	prefix := filepath.Join(dir, "cosign")
	if _, stderr, code := runLauncher(t, env, "keygen", "--output-key-prefix", prefix); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, stderr)
	}
	notLayout := filepath.Join(dir, "not-a-layout")
	if err := os.Mkdir(notLayout, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(notLayout+".sig", []byte("c2ln"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(notLayout+".payload.json", []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name  string
		args  []string
		image string
		want  string
	}{
		{"sign a missing image", []string{"sign", "--key", prefix + ".key"}, missing, "no such file or directory"},
		{"sign a directory without index.json", []string{"sign", "--key", prefix + ".key"}, notLayout, "not an OCI image layout"},
		{"verify a directory without index.json", []string{"verify", "--key", prefix + ".pub"}, notLayout, "not an OCI image layout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := runLauncher(t, env, append(tc.args, "--image", tc.image)...)
			if code != 1 || !strings.Contains(stderr, "image "+tc.image+": ") || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 1, naming the image and containing %q", code, stderr, tc.want)
			}
			if n := strings.Count(stderr, "image "+tc.image); n != 1 {
				t.Errorf("the image is named %d times: %q", n, stderr)
			}
		})
	}
}
