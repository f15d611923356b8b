package launchercmd

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// TestImageBuildLayer: --layer must name a directory (a symlink to one is
// followed) and its files end up in the image; a regular file or a missing
// path fails, naming --layer, instead of building an empty layer.
func TestImageBuildLayer(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "dir")
	if err := os.MkdirAll(filepath.Join(dir, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app", "hello.txt"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, filepath.Join(base, "dirlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(file, filepath.Join(base, "filelink")); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name, layer string
		code        int
		stderr      string // substring; "" for success
	}{
		{"directory", dir, 0, ""},
		{"symlink to a directory", filepath.Join(base, "dirlink"), 0, ""},
		{"regular file", file, 2, "--layer " + file + " is not a directory"},
		{"symlink to a file", filepath.Join(base, "filelink"), 2, "is not a directory"},
		{"missing", filepath.Join(base, "missing"), 1, "--layer " + filepath.Join(base, "missing") + ": "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(base, "img"+string(rune('a'+i)))
			_, stderr, code := runLauncher(t, nil, "image", "build", "-o", out, "--layer", tc.layer)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit %d, want %d; stderr %q, want it to contain %q", code, tc.code, stderr, tc.stderr)
			}
			if tc.code != 0 {
				if _, err := os.Stat(out); err == nil {
					t.Errorf("an image layout was written to %s", out)
				}
				return
			}
			if files := imageFiles(t, out); !files["app/hello.txt"] {
				t.Errorf("the image misses the layer's app/hello.txt; it has %v", files)
			}
		})
	}
}

// imageFiles lists the flattened filesystem of the one image in a layout.
func imageFiles(t *testing.T, dir string) map[string]bool {
	t.Helper()
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("index: %v, %+v", err, m)
	}
	img, err := p.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]bool{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = true
	}
}

// TestImageBuildBusyboxApplets: --busybox names applets the binary has
// (its own applet list, as 'busybox --list' prints it); an applet it lacks
// is refused by name instead of becoming a dangling /bin/NAME symlink.
func TestImageBuildBusyboxApplets(t *testing.T) {
	const bb = "/bin/busybox"
	if _, err := os.Stat(bb); err != nil {
		t.Skip("no /bin/busybox: apt-get install busybox-static")
	}
	base := t.TempDir()
	for i, tc := range []struct {
		name, applets string
		code          int
		stderr        string // substring; "" for success
	}{
		{"known", "sh,echo,cat,[,[[", 0, ""},
		{"unknown", "sh,frobnicate", 1, `busybox /bin/busybox has no applet "frobnicate": give only applets it has`},
		{"two unknown", "catt,sh,ech", 1, `has no applets "catt", "ech"`},
		{"a path", "sh,../x", 1, `applet name "../x" is not a plain name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(base, "img"+string(rune('a'+i)))
			_, stderr, code := runLauncher(t, nil, "image", "build", "-o", out, "--busybox-path", bb, "--busybox", tc.applets)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit %d, want %d; stderr %q, want it to contain %q", code, tc.code, stderr, tc.stderr)
			}
			if tc.code != 0 {
				if _, err := os.Stat(out); err == nil {
					t.Errorf("an image layout was written to %s", out)
				}
				return
			}
			if files := imageFiles(t, out); !files["bin/echo"] || !files["bin/[["] {
				t.Errorf("the image misses bin/echo or bin/[[; it has %v", files)
			}
		})
	}
}
