package measure

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// FuzzOpenImageArchive feeds arbitrary bytes to OpenImage as an image
// archive: it must return an error or a verified image, never panic or
// hang. Seeds are a real OCI archive and docker archives with gzip and
// uncompressed layers.
func FuzzOpenImageArchive(f *testing.F) {
	img := testImage(f, 64, 1, "linux/amd64")
	oci, err := os.ReadFile(tarDir(f, writeLayout(f, img)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(oci)
	dp := filepath.Join(f.TempDir(), "d.tar")
	tag, _ := name.NewTag("x/y:z")
	if err := tarball.WriteToFile(dp, tag, img); err != nil {
		f.Fatal(err)
	}
	docker, _ := os.ReadFile(dp)
	f.Add(docker)
	saved, _ := os.ReadFile(writeSavedArchive(f, img)) // layers uncompressed: recompressed
	f.Add(saved)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "img.tar")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		im, err := OpenImage(context.Background(), p, ImageOptions{Workers: 1, Pin: true, MaxUnpacked: 64 << 20})
		if err != nil {
			return
		}
		defer im.Close()
		if _, _, err := ParseDigest(im.ManifestDigest); err != nil {
			t.Fatalf("accepted image with manifest digest %q", im.ManifestDigest)
		}
		if _, err := im.V1Image(); err != nil {
			t.Fatal(err)
		}
	})
}
