package measure

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// tarOf is a tar stream of one regular file.
func tarOf(t testing.TB, name string, content []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(content)
	tw.Close()
	return b.Bytes()
}

func gzipOf(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

// shImage is a one-layer image whose /bin/sh holds content.
func shImage(t testing.TB, content string) v1.Image {
	t.Helper()
	blob := gzipOf(t, tarOf(t, "bin/sh", []byte(content)))
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(blob)), nil })
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
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// flattenedSh reads /bin/sh from the image's flattened filesystem, the way
// kvm/ builds the guest's root (mutate.Extract stops at the tar's end).
func flattenedSh(t *testing.T, im *Image) string {
	t.Helper()
	vi, err := im.V1Image()
	if err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(vi)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no bin/sh in the image: %v", err)
		}
		if h.Name == "bin/sh" {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
}

// TestPinnedImageSurvivesSwaps: once OpenImage has verified an image, what
// its V1Image serves is what was hashed, whatever happens to the files: a
// layer blob rewritten in place in a layout, replaced by rename, or an OCI
// archive rewritten in place through the same inode. (Before pinning the
// second read delivered the new bytes: the digest check ran only at EOF,
// which archive/tar never reaches.)
func TestPinnedImageSurvivesSwaps(t *testing.T) {
	good, evil := shImage(t, "#!signed\n"), shImage(t, "#!evil!\n")
	evilLayers, _ := evil.Layers()
	evilBlob := func() []byte {
		rc, _ := evilLayers[0].Compressed()
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		return b
	}()
	layerPath := func(dir string, im *Image) string {
		return filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(im.Layers[0].Digest, "sha256:"))
	}
	rewriteArchive := func(t *testing.T, path string, im *Image) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// Same length, same inode: the blob's bytes inside the tar
		// are overwritten where they stand.
		goodBlob := im.pinned[im.Layers[0].Digest]
		gb := make([]byte, goodBlob.Size)
		goodBlob.File.ReadAt(gb, 0)
		i := bytes.Index(b, gb)
		if i < 0 {
			t.Fatal("layer blob not found in the archive")
		}
		junk := bytes.Repeat([]byte{0x5a}, len(gb))
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt(junk, int64(i))
		f.Close()
	}
	for _, tc := range []struct {
		name    string
		archive bool
		saved   bool // a `docker save` archive: layers uncompressed, recompressed for the digest
		swap    func(t *testing.T, path string, im *Image)
	}{
		{"layout blob rewritten in place", false, false, func(t *testing.T, dir string, im *Image) {
			f, err := os.OpenFile(layerPath(dir, im), os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(evilBlob)
			f.Close()
		}},
		{"layout blob replaced by rename", false, false, func(t *testing.T, dir string, im *Image) {
			tmp := filepath.Join(dir, "evil")
			os.WriteFile(tmp, evilBlob, 0o644)
			if err := os.Rename(tmp, layerPath(dir, im)); err != nil {
				t.Fatal(err)
			}
		}},
		{"archive rewritten in place", true, false, rewriteArchive},
		{"docker save archive rewritten in place", true, true, rewriteArchive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeLayout(t, good)
			switch {
			case tc.saved:
				path = writeSavedArchive(t, good)
			case tc.archive:
				path = tarDir(t, path)
			}
			im, err := OpenImage(context.Background(), path, ImageOptions{Pin: true})
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			tc.swap(t, path, im)
			if got := flattenedSh(t, im); got != "#!signed\n" {
				t.Fatalf("the guest would get /bin/sh = %q, not the measured one", got)
			}
			// And the file really changed: a fresh open refuses it.
			if again, err := OpenImage(context.Background(), path, ImageOptions{}); err == nil {
				again.Close()
				t.Fatal("the swapped image opens cleanly: the test swapped nothing")
			}
		})
	}
}

// TestPinnedLayersAreSealed: the memfd behind a pinned layer refuses writes.
func TestPinnedLayersAreSealed(t *testing.T) {
	im, err := OpenImage(context.Background(), writeLayout(t, shImage(t, "x")), ImageOptions{Pin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	p := im.pinned[im.Layers[0].Digest]
	if p == nil || p.Digest != im.Layers[0].Digest {
		t.Fatalf("pinned layer %+v", p)
	}
	if _, err := p.File.WriteAt([]byte{0}, 0); err == nil {
		t.Fatal("wrote to a pinned layer")
	}
	// Opening it again through /proc gives no way around the seals.
	if f, err := os.OpenFile(p.Path(), os.O_RDWR, 0); err == nil {
		_, werr := f.WriteAt([]byte{0}, 0)
		f.Close()
		if werr == nil {
			t.Fatal("wrote to a pinned layer through /proc")
		}
	}
}

// TestOpenImageRefusesBombs: a layer that unpacks past MaxUnpacked fails
// with ErrTooLarge while it is verified, having read no more than the limit.
func TestOpenImageRefusesBombs(t *testing.T) {
	zeros := tarOf(t, "big", make([]byte, 4<<20)) // 4 MiB of zeros: ≈ 4 KiB compressed
	blob := gzipOf(t, zeros)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(blob)), nil })
	if err != nil {
		t.Fatal(err)
	}
	bomb, err := mutate.AppendLayers(empty.Image, l, l)
	if err != nil {
		t.Fatal(err)
	}
	dir := writeLayout(t, bomb)
	for _, tc := range []struct {
		name  string
		limit int64
		ok    bool
	}{
		{"one layer past the limit", 1 << 20, false},
		{"the two layers together past it", 6 << 20, false},
		{"within it", 16 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im, err := OpenImage(context.Background(), dir, ImageOptions{Pin: true, MaxUnpacked: tc.limit})
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				im.Close()
				return
			}
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "decompression bomb") {
				t.Fatalf("got %v, want ErrTooLarge", err)
			}
		})
	}
	if int64(len(blob)) > 64<<10 {
		t.Fatalf("the bomb's layer is %d bytes: not a bomb", len(blob))
	}
}

// rawLayer is a layer given by its exact blob and tar, so a test can
// describe a blob that ggcr itself would not produce.
type rawLayer struct{ blob, tar []byte }

func (l rawLayer) Digest() (v1.Hash, error) { return v1.NewHash(DigestBytes(SHA256, l.blob)) }
func (l rawLayer) DiffID() (v1.Hash, error) { return v1.NewHash(DigestBytes(SHA256, l.tar)) }
func (l rawLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}
func (l rawLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.tar)), nil
}
func (l rawLayer) Size() (int64, error)                { return int64(len(l.blob)), nil }
func (l rawLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }

// TestOpenImageTrailingBytes: bytes after the end of a gzip layer's stream
// are refused (the blob is more than the layer its diff_id describes).
func TestOpenImageTrailingBytes(t *testing.T) {
	tr := tarOf(t, "a", []byte("a"))
	for _, tc := range []struct {
		name string
		tail []byte
	}{
		{"junk", []byte("trailing junk")},
		{"zeros", make([]byte, 64)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := mutate.AppendLayers(empty.Image, rawLayer{blob: append(gzipOf(t, tr), tc.tail...), tar: tr})
			if err != nil {
				t.Fatal(err)
			}
			if im, err := OpenImage(context.Background(), writeLayout(t, img), ImageOptions{}); err == nil {
				im.Close()
				t.Fatal("a gzip layer with trailing bytes was accepted")
			}
		})
	}
	// The same layer without them opens.
	img, err := mutate.AppendLayers(empty.Image, rawLayer{blob: gzipOf(t, tr), tar: tr})
	if err != nil {
		t.Fatal(err)
	}
	im, err := OpenImage(context.Background(), writeLayout(t, img), ImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	im.Close()
}
