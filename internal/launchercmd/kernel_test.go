package launchercmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKernelExtractSaysWhatItDoes: kernel extract used to be ~20 s of
// silence. It always says, on stderr, that it is decompressing which
// kernel and that this takes a while; -v adds the compressed size (and,
// when it succeeds, the vmlinux size and the time taken). Stdout keeps
// only the result line.
func TestKernelExtractSaysWhatItDoes(t *testing.T) {
	dir := t.TempDir()
	bz := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(bz, make([]byte, 3<<20), 0o644); err != nil { // not a kernel: fails after the lines
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		flags   []string
		want    []string
		notWant []string
	}{
		{"default", nil, []string{"launcher: decompressing the kernel " + bz + " to a vmlinux (this takes ~20 s under load)"}, []string{"MiB compressed"}},
		{"-v", []string{"-v"}, []string{"launcher: kernel " + bz + ": 3.0 MiB compressed", "decompressing the kernel " + bz}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"kernel", "extract", "--bzimage", bz, "-o", filepath.Join(dir, "vmlinux")}, tc.flags...)
			stdout, stderr, code := runLauncher(t, nil, args...)
			if code != 1 || stdout != "" {
				t.Fatalf("exit %d, want 1 (not a kernel); stdout %q", code, stdout)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(stderr, w) {
					t.Errorf("stderr has %q:\n%s", w, stderr)
				}
			}
			if i, j := strings.Index(stderr, "decompressing"), strings.Index(stderr, "launcher kernel extract: "+bz); i < 0 || j < i {
				t.Errorf("the progress line does not come before the error:\n%s", stderr)
			}
		})
	}
}
