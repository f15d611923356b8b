package measure

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/bulwark-project/bulwark/internal/imagetest"
)

// writeSavedArchive writes img as `docker save` does into a new file.
func writeSavedArchive(t testing.TB, img v1.Image) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "saved.tar")
	imagetest.WriteDockerSave(t, img, p)
	return p
}

// TestDockerArchiveRegistryDigest: a docker archive's identity is the
// digest the registry holds for the image whenever it can be recovered —
// gzip layers saved as the registry's blobs ('crane pull'), or layers saved
// uncompressed (`docker save`) of an image whose registry blobs were
// compressed as go-containerregistry compresses them ('crane push') — and
// the hint says why it is not when the registry's blobs were compressed
// otherwise or a layer is zstd. The layers stay pinned from the one read:
// V1Image serves the recompressed blobs, checked against their digests.
func TestDockerArchiveRegistryDigest(t *testing.T) {
	// Compressible layers, over several deflate blocks, and random ones.
	img := testImage(t, 3<<20, 2, "linux/amd64")
	text, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		body := bytes.Repeat([]byte("a compressible line of the layer\n"), 200000)
		tw.WriteHeader(&tar.Header{Name: "etc/text", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write(body)
		tw.Close()
		return io.NopCloser(&b), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, text); err != nil {
		t.Fatal(err)
	}
	registryDigest, _ := img.Digest()
	if mt, _ := img.MediaType(); mt != types.DockerManifestSchema2 {
		t.Fatalf("test image is %s", mt)
	}
	tag, _ := name.NewTag("example.com/app:1")
	gz := filepath.Join(t.TempDir(), "crane-pull.tar")
	if err := tarball.WriteToFile(gz, tag, img); err != nil {
		t.Fatal(err)
	}
	saved := writeSavedArchive(t, img)
	otherDigest, _ := imagetest.Recompressed(t, img, gzip.BestCompression).Digest()
	if otherDigest == registryDigest {
		t.Fatal("the other compression gives the same digest")
	}

	for _, tc := range []struct {
		name     string
		path     string
		recovery string
	}{
		{"gzip layers as saved", gz, RecoveredAsSaved},
		{"uncompressed layers, recompressed", saved, RecoveredRecompressed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im, err := OpenImage(context.Background(), tc.path, ImageOptions{Pin: true})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			if im.ManifestDigest != registryDigest.String() || im.ManifestRecovery != tc.recovery || im.ManifestMediaType != string(types.DockerManifestSchema2) {
				t.Fatalf("digest %s (%s, %s), the registry's is %s", im.ManifestDigest, im.ManifestRecovery, im.ManifestMediaType, registryDigest)
			}
			// go-containerregistry's tarball package, which 'crane push'
			// uses, computes the same manifest.
			ti, err := tarball.ImageFromPath(tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if d, _ := ti.Digest(); d.String() != im.ManifestDigest {
				t.Fatalf("tarball package says %s, OpenImage %s", d, im.ManifestDigest)
			}
			for i, l := range im.Layers {
				if (l.StoredDigest != "") != (tc.recovery == RecoveredRecompressed) || l.MediaType != string(types.DockerLayer) {
					t.Fatalf("layer %d: %+v", i, l)
				}
			}
			if !strings.Contains(im.DigestHint(), "launcher image pull -o DIR") {
				t.Fatalf("hint %q", im.DigestHint())
			}
			checkV1(t, im, img)
		})
	}

	// The same uncompressed archive, opened again without workers or
	// pinning: the same identity.
	again, err := OpenImage(context.Background(), saved, ImageOptions{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	again.Close()
	if again.ManifestDigest != registryDigest.String() {
		t.Fatalf("reopened as %s", again.ManifestDigest)
	}
	// The registry's blobs compressed by another tool: the archive's
	// uncompressed layers cannot give that digest back, and the hint says so.
	if again.ManifestDigest == otherDigest.String() || !strings.Contains(again.DigestHint(), "compressed otherwise") {
		t.Fatalf("digest %s, hint %q", again.ManifestDigest, again.DigestHint())
	}

	// An OCI layout holds its manifest: no hint.
	oci, err := OpenImage(context.Background(), writeLayout(t, img), ImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oci.Close()
	if oci.ManifestRecovery != "" || oci.DigestHint() != "" || oci.ManifestDigest != registryDigest.String() {
		t.Fatalf("OCI layout: %q %q %s", oci.ManifestRecovery, oci.DigestHint(), oci.ManifestDigest)
	}
}

// TestDockerArchiveZstdNotRecoverable: a docker archive with a zstd layer
// has no Docker manifest to recover; it opens with an OCI manifest of the
// blobs as saved, and the hint says the registry's digest cannot be
// recovered and what to do.
func TestDockerArchiveZstdNotRecoverable(t *testing.T) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "f", Mode: 0o644, Size: 5, Typeflag: tar.TypeReg})
	tw.Write([]byte("hello"))
	tw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b.Bytes())), nil }, tarball.WithCompression("zstd"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	img, _ = mutate.ConfigFile(img, cfg)
	path := filepath.Join(t.TempDir(), "zstd.tar")
	tag, _ := name.NewTag("example.com/app:1")
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		t.Fatal(err)
	}
	im, err := OpenImage(context.Background(), path, ImageOptions{Pin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if im.ManifestRecovery != NotRecovered || im.ManifestMediaType != string(types.OCIManifestSchema1) || im.Layers[0].MediaType != string(types.OCILayerZStd) {
		t.Fatalf("%s %s %+v", im.ManifestRecovery, im.ManifestMediaType, im.Layers)
	}
	if h := im.DigestHint(); !strings.Contains(h, "zstd") || !strings.Contains(h, "cosign save") {
		t.Fatalf("hint %q", h)
	}
	vi, err := im.V1Image()
	if err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(vi)
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Contains(got, []byte("hello")) {
		t.Fatalf("extract: %v", err)
	}
}
