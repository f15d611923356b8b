package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/ociimage"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/content/local"
	"github.com/opencontainers/go-digest"
	imagespecs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// testStore is a real containerd content store (content/local, what
// containerd itself uses) holding one small image.
type testStore struct {
	root     string
	cs       content.Store
	manifest ocispec.Descriptor
	config   ocispec.Descriptor
	layer    ocispec.Descriptor
}

func newTestStore(t testing.TB) *testStore {
	t.Helper()
	img, err := ociimage.Build(ociimage.Spec{
		Layers:     []ociimage.Layer{{Entries: []ociimage.Entry{{Path: "hello.txt", Mode: 0o644, Data: []byte("hello from the store\n")}}}},
		Entrypoint: []string{"/bin/sh"}, Cmd: []string{"-c", "cat /hello.txt"},
	})
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	cs, err := local.NewStore(root)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testStore{root: root, cs: cs}
	put := func(mt string, b []byte) ocispec.Descriptor {
		d := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
		if err := content.WriteBlob(context.Background(), cs, d.Digest.String(), bytes.NewReader(b), d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	lb, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	ts.layer = put(ocispec.MediaTypeImageLayerGzip, lb)
	ts.config = put(ocispec.MediaTypeImageConfig, cfg)
	ts.manifest = put(ocispec.MediaTypeImageManifest, raw)
	return ts
}

// index stores an index holding the image's manifest for platform
// (nil: no platform) and returns its descriptor.
func (ts *testStore) index(t testing.TB, platform *ocispec.Platform) ocispec.Descriptor {
	t.Helper()
	m := ts.manifest
	m.Platform = platform
	b, err := json.Marshal(ocispec.Index{Versioned: imagespecs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{m}})
	if err != nil {
		t.Fatal(err)
	}
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := content.WriteBlob(context.Background(), ts.cs, d.Digest.String(), bytes.NewReader(b), d); err != nil {
		t.Fatal(err)
	}
	return d
}

// tamper overwrites a blob in the store's files, as someone with access
// to containerd's root could.
func (ts *testStore) tamper(t *testing.T, d ocispec.Descriptor) {
	t.Helper()
	p := filepath.Join(ts.root, "blobs", "sha256", d.Digest.Encoded())
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	os.Chmod(p, 0o644)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The image copied out of the content store is a layout the host
// service's measurement accepts, with the store's manifest digest; a
// modified, missing or unsuitable blob is refused, naming it.
func TestExportImage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		target  func(t *testing.T, ts *testStore) ocispec.Descriptor
		wantErr string
	}{
		{name: "a manifest", target: func(t *testing.T, ts *testStore) ocispec.Descriptor { return ts.manifest }},
		{name: "an index with linux/amd64", target: func(t *testing.T, ts *testStore) ocispec.Descriptor {
			return ts.index(t, &ocispec.Platform{OS: "linux", Architecture: "amd64"})
		}},
		{name: "an index with one manifest and no platform", target: func(t *testing.T, ts *testStore) ocispec.Descriptor { return ts.index(t, nil) }},
		{name: "an index without linux/amd64", wantErr: "no manifest for linux/amd64", target: func(t *testing.T, ts *testStore) ocispec.Descriptor {
			return ts.index(t, &ocispec.Platform{OS: "linux", Architecture: "arm64"})
		}},
		{name: "a modified layer", wantErr: "does not match its digest: it was modified", target: func(t *testing.T, ts *testStore) ocispec.Descriptor {
			ts.tamper(t, ts.layer)
			return ts.manifest
		}},
		{name: "a modified config", wantErr: "it was modified", target: func(t *testing.T, ts *testStore) ocispec.Descriptor {
			ts.tamper(t, ts.config)
			return ts.manifest
		}},
		{name: "a modified manifest", wantErr: "it was modified", target: func(t *testing.T, ts *testStore) ocispec.Descriptor {
			ts.tamper(t, ts.manifest)
			return ts.manifest
		}},
		{name: "a missing layer", wantErr: "is not in containerd's content store", target: func(t *testing.T, ts *testStore) ocispec.Descriptor {
			if err := ts.cs.Delete(context.Background(), ts.layer.Digest); err != nil {
				t.Fatal(err)
			}
			return ts.manifest
		}},
		{name: "a size that lies", wantErr: "its descriptor says", target: func(t *testing.T, ts *testStore) ocispec.Descriptor {
			d := ts.manifest
			d.Size--
			return d
		}},
		{name: "a config as the target", wantErr: "not an image manifest or index", target: func(t *testing.T, ts *testStore) ocispec.Descriptor { return ts.config }},
		{name: "a huge manifest", wantErr: "at most", target: func(t *testing.T, ts *testStore) ocispec.Descriptor {
			d := ts.manifest
			d.Size = maxManifestBytes + 1
			return d
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestStore(t)
			dir := filepath.Join(t.TempDir(), "image")
			got, err := exportImage(context.Background(), ts.cs, tc.target(t, ts), dir)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("exportImage: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Manifest.Digest != ts.manifest.Digest || strings.Join(got.Config.Cmd, " ") != "-c cat /hello.txt" {
				t.Errorf("exported %+v", got)
			}
			fi, err := os.Stat(dir)
			if err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("layout directory: %v, mode %v; want 0700", err, fi.Mode())
			}
			im, err := measure.OpenImage(context.Background(), dir, measure.ImageOptions{})
			if err != nil {
				t.Fatalf("measure.OpenImage of the exported layout: %v", err)
			}
			defer im.Close()
			if im.ManifestDigest != ts.manifest.Digest.String() {
				t.Errorf("measured manifest %s, want the store's %s", im.ManifestDigest, ts.manifest.Digest)
			}
		})
	}
}
