// Package imagetest builds image files for tests: Docker archives as
// `docker save` writes them, and images whose layers another tool
// compressed. It is imported by tests only.
package imagetest

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// WriteDockerSave writes img to file as the legacy `docker save` format:
// manifest.json (tagged app:1), the config as <hex>.json and every layer
// uncompressed as <n>/layer.tar.
func WriteDockerSave(t testing.TB, img v1.Image, file string) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	add := func(name string, b []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	add(cfgName.Hex+".json", raw)
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		n := path.Join(strings.Repeat("a", i+1), "layer.tar")
		add(n, b)
		names = append(names, n)
	}
	man, err := json.Marshal([]map[string]any{{"Config": cfgName.Hex + ".json", "RepoTags": []string{"app:1"}, "Layers": names}})
	if err != nil {
		t.Fatal(err)
	}
	add("manifest.json", man)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// Recompressed is img with its layers gzip-compressed at level, as a tool
// other than go-containerregistry (docker push) would upload them.
func Recompressed(t testing.TB, img v1.Image, level int) v1.Image {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out := empty.Image
	for _, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		nl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }, tarball.WithCompressionLevel(level))
		if err != nil {
			t.Fatal(err)
		}
		if out, err = mutate.AppendLayers(out, nl); err != nil {
			t.Fatal(err)
		}
	}
	out, err = mutate.ConfigFile(out, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
