package measure

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testImage makes a random image with the given platform and layers.
func testImage(t testing.TB, layerSize int64, layers int, osArch string) v1.Image {
	t.Helper()
	img, err := random.Image(layerSize, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, _ = strings.Cut(osArch, "/")
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func writeLayout(t testing.TB, imgs ...v1.Image) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs {
		if err := p.AppendImage(img); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// tarDir writes dir's files into a tar archive (an OCI archive).
func tarDir(t testing.TB, dir string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: "./" + rel, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

func expectImage(t *testing.T, im *Image, img v1.Image) {
	t.Helper()
	d, _ := img.Digest()
	c, _ := img.ConfigName()
	if im.ManifestDigest != d.String() || im.ConfigDigest != c.String() {
		t.Fatalf("manifest %s config %s, want %s %s", im.ManifestDigest, im.ConfigDigest, d, c)
	}
	ls, _ := img.Layers()
	if len(im.Layers) != len(ls) {
		t.Fatalf("%d layers, want %d", len(im.Layers), len(ls))
	}
	for i, l := range ls {
		ld, _ := l.Digest()
		diff, _ := l.DiffID()
		if im.Layers[i].Digest != ld.String() || im.Layers[i].DiffID != diff.String() {
			t.Fatalf("layer %d = %+v, want %s / %s", i, im.Layers[i], ld, diff)
		}
	}
}

func TestOpenImageLayoutAndArchive(t *testing.T) {
	img := testImage(t, 4096, 3, "linux/amd64")
	dir := writeLayout(t, img)
	for _, tc := range []struct {
		name, path, format string
		workers            int
	}{
		{"layout dir", dir, "oci-layout", 0},
		{"layout dir one worker", dir, "oci-layout", 1},
		{"oci archive", tarDir(t, dir), "oci-archive", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im, err := OpenImage(context.Background(), tc.path, ImageOptions{Workers: tc.workers, Pin: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { im.Close() })
			expectImage(t, im, img)
			if im.Format != tc.format || im.Platform != "linux/amd64" || im.SynthesizedManifest {
				t.Fatalf("format %s platform %s synthesized %v", im.Format, im.Platform, im.SynthesizedManifest)
			}
			// The manifest digest is the sha256 of the manifest bytes.
			if sum := sha256.Sum256(im.RawManifest()); "sha256:"+hex.EncodeToString(sum[:]) != im.ManifestDigest {
				t.Fatal("manifest digest is not the hash of the manifest")
			}
			checkV1(t, im, img)
		})
	}
}

// checkV1 reads the verified v1.Image completely and compares it with img.
func checkV1(t *testing.T, im *Image, img v1.Image) {
	t.Helper()
	vi, err := im.V1Image()
	if err != nil {
		t.Fatal(err)
	}
	d, err := vi.Digest()
	if err != nil || d.String() != im.ManifestDigest {
		t.Fatalf("v1 digest %s, %v", d, err)
	}
	want, _ := img.Layers()
	got, err := vi.Layers()
	if err != nil || len(got) != len(want) {
		t.Fatalf("layers: %d, %v", len(got), err)
	}
	for i := range got {
		for _, uncompressed := range []bool{false, true} {
			var a, b io.ReadCloser
			if uncompressed {
				a, _ = got[i].Uncompressed()
				b, _ = want[i].Uncompressed()
			} else {
				a, _ = got[i].Compressed()
				b, _ = want[i].Compressed()
			}
			ab, err := io.ReadAll(a)
			if err != nil {
				t.Fatalf("layer %d: %v", i, err)
			}
			bb, _ := io.ReadAll(b)
			a.Close()
			b.Close()
			if !bytes.Equal(ab, bb) {
				t.Fatalf("layer %d (uncompressed %v) differs", i, uncompressed)
			}
		}
	}
	// The flattened filesystem, as kvm/ builds it, reads without error.
	rc := mutate.Extract(vi)
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if err != nil || n == 0 {
		t.Fatalf("extract: %d bytes, %v", n, err)
	}
}

func TestOpenImageTampered(t *testing.T) {
	img := testImage(t, 4096, 2, "linux/amd64")
	ls, _ := img.Layers()
	l1, _ := ls[1].Digest()
	cfg, _ := img.ConfigName()
	man, _ := img.Digest()
	blob := func(dir string, h v1.Hash) string { return filepath.Join(dir, "blobs", "sha256", h.Hex) }
	flip := func(p string) {
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 0x40
		os.WriteFile(p, b, 0o644)
	}
	for _, tc := range []struct {
		name, want string
		tamper     func(dir string)
	}{
		{"layer byte flipped", "layer 1 (" + l1.String() + "): content does not match its digest: it hashes to", func(d string) { flip(blob(d, l1)) }},
		{"layer truncated", "layer 1 (" + l1.String() + "): content does not match its digest", func(d string) {
			os.Truncate(blob(d, l1), 100)
		}},
		{"layer grown", "longer than", func(d string) {
			f, _ := os.OpenFile(blob(d, l1), os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte("x"))
			f.Close()
		}},
		{"layer missing", "no such file", func(d string) { os.Remove(blob(d, l1)) }},
		{"config flipped", "config " + cfg.String(), func(d string) { flip(blob(d, cfg)) }},
		{"manifest flipped", "manifest " + man.String(), func(d string) { flip(blob(d, man)) }},
		{"index.json garbage", "index.json", func(d string) { os.WriteFile(filepath.Join(d, "index.json"), []byte("{"), 0o644) }},
		{"no index.json", "no index.json", func(d string) { os.Remove(filepath.Join(d, "index.json")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeLayout(t, img)
			tc.tamper(dir)
			im, err := OpenImage(context.Background(), dir, ImageOptions{})
			if err == nil {
				im.Close()
				t.Fatal("tampered image accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestOpenImageIndexSelection(t *testing.T) {
	amd := testImage(t, 512, 1, "linux/amd64")
	arm := testImage(t, 512, 1, "linux/arm64")
	amdD, _ := amd.Digest()
	armD, _ := arm.Digest()
	// A multi-platform index nested under index.json, as registries and
	// buildx produce.
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	nested := filepath.Join(t.TempDir(), "nested")
	lp, err := layout.Write(nested, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendIndex(idx); err != nil {
		t.Fatal(err)
	}
	// Two manifests directly in index.json without platforms.
	flat := writeLayout(t, amd, arm)
	single := writeLayout(t, amd)
	for _, tc := range []struct {
		name, dir, want, err string
		opts                 ImageOptions
	}{
		{"nested default amd64", nested, amdD.String(), "", ImageOptions{}},
		{"nested arm64", nested, armD.String(), "", ImageOptions{Platform: "linux/arm64"}},
		{"nested by digest", nested, armD.String(), "", ImageOptions{Manifest: armD.String()}},
		{"nested absent platform", nested, "", "0 are for linux/s390x", ImageOptions{Platform: "linux/s390x"}},
		{"flat needs a choice", flat, "", "choose one by digest", ImageOptions{}},
		{"single image wrong platform", single, "", "its config says linux/amd64", ImageOptions{Platform: "linux/arm64"}},
		{"single image right platform", single, amdD.String(), "", ImageOptions{Platform: "linux/amd64"}},
		{"flat by digest", flat, amdD.String(), "", ImageOptions{Manifest: amdD.String()}},
		{"unknown digest", flat, "", "is not in the image", ImageOptions{Manifest: "sha256:" + strings.Repeat("0", 64)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im, err := OpenImage(context.Background(), tc.dir, tc.opts)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			if im.ManifestDigest != tc.want {
				t.Fatalf("picked %s, want %s", im.ManifestDigest, tc.want)
			}
		})
	}
}

func TestOpenImageDockerArchive(t *testing.T) {
	img := testImage(t, 4096, 2, "linux/amd64")
	// go-containerregistry writes the legacy `docker save` format with
	// gzip-compressed layers.
	gz := filepath.Join(t.TempDir(), "docker.tar")
	tag, _ := name.NewTag("example.com/app:1")
	if err := tarball.WriteToFile(gz, tag, img); err != nil {
		t.Fatal(err)
	}
	im, err := OpenImage(context.Background(), gz, ImageOptions{Pin: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	cfg, _ := img.ConfigName()
	if im.Format != "docker-archive" || !im.SynthesizedManifest || im.ConfigDigest != cfg.String() {
		t.Fatalf("%+v", im)
	}
	ls, _ := img.Layers()
	for i, l := range ls {
		d, _ := l.Digest()
		if im.Layers[i].Digest != d.String() || im.Layers[i].MediaType != string(types.DockerLayer) || im.Layers[i].StoredDigest != "" {
			t.Fatalf("layer %d: %+v, want %s", i, im.Layers[i], d)
		}
	}
	// The synthesized manifest is deterministic: the same archive, the same identity.
	again, err := OpenImage(context.Background(), gz, ImageOptions{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.ManifestDigest != im.ManifestDigest || DigestBytes(SHA256, im.RawManifest()) != im.ManifestDigest {
		t.Fatal("synthesized manifest digest unstable")
	}
	checkV1(t, im, img)

	// An uncompressed legacy archive written by hand, as older `docker save` does.
	unc, layerTar, cfgBytes := handDockerArchive(t, false)
	im2, err := OpenImage(context.Background(), unc, ImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	if im2.Layers[0].StoredDigest != DigestBytes(SHA256, layerTar) || im2.Layers[0].MediaType != string(types.DockerLayer) ||
		im2.ConfigDigest != DigestBytes(SHA256, cfgBytes) || im2.ManifestRecovery != RecoveredRecompressed {
		t.Fatalf("%+v", im2)
	}
	// A layer that does not match the config's diff_id is refused.
	bad, _, _ := handDockerArchive(t, true)
	if _, err := OpenImage(context.Background(), bad, ImageOptions{}); err == nil || !strings.Contains(err.Error(), "diff_id") {
		t.Fatalf("got %v", err)
	}
}

// handDockerArchive writes a one-layer legacy docker archive; with
// wrongDiffID the config names another diff_id.
func handDockerArchive(t *testing.T, wrongDiffID bool) (path string, layerTar, cfgBytes []byte) {
	var lb bytes.Buffer
	tw := tar.NewWriter(&lb)
	tw.WriteHeader(&tar.Header{Name: "hello.txt", Mode: 0o644, Size: 5, Typeflag: tar.TypeReg})
	tw.Write([]byte("hello"))
	tw.Close()
	layerTar = lb.Bytes()
	diff := DigestBytes(SHA256, layerTar)
	if wrongDiffID {
		diff = DigestBytes(SHA256, []byte("other"))
	}
	cfgBytes = []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%q]}}`, diff))
	cfgName := hex.EncodeToString(func() []byte { s := sha256.Sum256(cfgBytes); return s[:] }()) + ".json"
	man, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{"app:1"}, "Layers": []string{"abc/layer.tar"}}})
	path = filepath.Join(t.TempDir(), "legacy.tar")
	f, _ := os.Create(path)
	defer f.Close()
	w := tar.NewWriter(f)
	for _, e := range []struct {
		n string
		b []byte
	}{{cfgName, cfgBytes}, {"abc/layer.tar", layerTar}, {"manifest.json", man}} {
		w.WriteHeader(&tar.Header{Name: e.n, Mode: 0o644, Size: int64(len(e.b)), Typeflag: tar.TypeReg})
		w.Write(e.b)
	}
	// A symlinked duplicate layer, as docker save writes for shared layers.
	w.WriteHeader(&tar.Header{Name: "def/layer.tar", Linkname: "../abc/layer.tar", Typeflag: tar.TypeSymlink})
	w.Close()
	return path, layerTar, cfgBytes
}

func TestOpenImageBadInputs(t *testing.T) {
	dir := t.TempDir()
	gz := filepath.Join(dir, "x.tar.gz")
	os.WriteFile(gz, []byte{0x1f, 0x8b, 8, 0, 0, 0}, 0o644)
	notTar := filepath.Join(dir, "junk")
	os.WriteFile(notTar, bytes.Repeat([]byte("junk"), 300), 0o644)
	emptyTar := filepath.Join(dir, "empty.tar")
	f, _ := os.Create(emptyTar)
	tar.NewWriter(f).Close()
	f.Close()
	dup := filepath.Join(dir, "dup.tar")
	f, _ = os.Create(dup)
	tw := tar.NewWriter(f)
	for i := 0; i < 2; i++ {
		tw.WriteHeader(&tar.Header{Name: "index.json", Size: 2, Typeflag: tar.TypeReg})
		tw.Write([]byte("{}"))
	}
	tw.Close()
	f.Close()
	for _, tc := range []struct{ name, path, want string }{
		{"missing", filepath.Join(dir, "nope"), "no such file"},
		{"empty dir", t.TempDir(), "no index.json"},
		{"gzip", gz, "decompress it first"},
		{"not a tar", notTar, "tar"},
		{"empty tar", emptyTar, "neither index.json"},
		{"duplicate member", dup, "appears twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenImage(context.Background(), tc.path, ImageOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestOpenImageChecksDiffID: a layer whose blob matches its digest but whose
// content is not the config's diff_id is refused by OpenImage itself.
func TestOpenImageChecksDiffID(t *testing.T) {
	img := testImage(t, 1024, 1, "linux/amd64")
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
	cfg.RootFS.DiffIDs[0] = mustHash(DigestBytes(SHA256, []byte("not the layer")))
	bad, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenImage(context.Background(), writeLayout(t, bad), ImageOptions{})
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "diff_id") {
		t.Fatalf("got %v", err)
	}
}

func TestV1ImageNeedsPin(t *testing.T) {
	im, err := OpenImage(context.Background(), writeLayout(t, testImage(t, 512, 1, "linux/amd64")), ImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if _, err := im.V1Image(); err == nil || !strings.Contains(err.Error(), "ImageOptions.Pin") {
		t.Fatalf("V1Image of an unpinned image: %v", err)
	}
}
