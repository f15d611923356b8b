package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/images"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	imagespecs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Limits on what the shim reads from containerd's content store before the
// host service measures it (which has its own, equal or tighter, limits).
const (
	maxManifestBytes = 4 << 20
	maxLayers        = 256
)

// errImage marks an image the shim cannot take from containerd's store.
var errImage = errors.New("bulwark shim: image")

// exportedImage is an image copied from containerd's content store.
type exportedImage struct {
	// Name is the image's name in containerd ("HOST/REPO:TAG").
	Name string
	// Manifest is the platform manifest the layout's index.json names.
	Manifest ocispec.Descriptor
	// Config is the image's configuration (entrypoint, cmd).
	Config ocispec.ImageConfig
}

// exportImage writes the image target (as containerd's image store names
// it) from the content store cs to dir, a new OCI image layout: every blob
// is read once from the store and checked against its digest and size on
// the way. Only the platform manifest (linux/amd64 from an index), its
// config and its layers are written, so the layout's one manifest is the
// one the host service measures and the policy judges. dir must not exist.
func exportImage(ctx context.Context, cs content.Provider, target ocispec.Descriptor, dir string) (exportedImage, error) {
	var out exportedImage
	manifestDesc, raw, err := resolveManifest(ctx, cs, target)
	if err != nil {
		return out, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return out, fmt.Errorf("%w: manifest %s: %v", errImage, manifestDesc.Digest, err)
	}
	if len(m.Layers) > maxLayers {
		return out, fmt.Errorf("%w: manifest %s: %d layers, at most %d", errImage, manifestDesc.Digest, len(m.Layers), maxLayers)
	}
	cfgRaw, err := readSmallBlob(ctx, cs, m.Config)
	if err != nil {
		return out, err
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(cfgRaw, &cfg); err != nil {
		return out, fmt.Errorf("%w: config %s: %v", errImage, m.Config.Digest, err)
	}

	if err := os.Mkdir(dir, 0o700); err != nil {
		return out, err
	}
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o700); err != nil {
		return out, err
	}
	write := func(d digest.Digest, b []byte) error {
		if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
			return fmt.Errorf("%w: digest %q: want sha256", errImage, trunc(d.String()))
		}
		return os.WriteFile(filepath.Join(blobs, d.Encoded()), b, 0o600)
	}
	if err := write(manifestDesc.Digest, raw); err != nil {
		return out, err
	}
	if err := write(m.Config.Digest, cfgRaw); err != nil {
		return out, err
	}
	for _, l := range m.Layers {
		if err := copyBlob(ctx, cs, l, blobs); err != nil {
			return out, err
		}
	}
	index := ocispec.Index{
		Versioned: imagespecs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{{MediaType: manifestDesc.MediaType, Digest: manifestDesc.Digest, Size: manifestDesc.Size}},
	}
	ib, err := json.Marshal(index)
	if err != nil {
		return out, err
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), ib, 0o600); err != nil {
		return out, err
	}
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o600); err != nil {
		return out, err
	}
	out.Manifest = manifestDesc
	out.Config = cfg.Config
	return out, nil
}

// resolveManifest reads target; an index is resolved to its linux/amd64
// (the host's platform) manifest.
func resolveManifest(ctx context.Context, cs content.Provider, target ocispec.Descriptor) (ocispec.Descriptor, []byte, error) {
	desc := target
	for depth := 0; ; depth++ {
		raw, err := readSmallBlob(ctx, cs, desc)
		if err != nil {
			return desc, nil, err
		}
		switch desc.MediaType {
		case ocispec.MediaTypeImageManifest, images.MediaTypeDockerSchema2Manifest:
			return desc, raw, nil
		case ocispec.MediaTypeImageIndex, images.MediaTypeDockerSchema2ManifestList:
		default:
			return desc, nil, fmt.Errorf("%w: %s has media type %q, not an image manifest or index", errImage, desc.Digest, trunc(desc.MediaType))
		}
		if depth > 0 {
			return desc, nil, fmt.Errorf("%w: index %s is nested in another index", errImage, desc.Digest)
		}
		var idx ocispec.Index
		if err := json.Unmarshal(raw, &idx); err != nil {
			return desc, nil, fmt.Errorf("%w: index %s: %v", errImage, desc.Digest, err)
		}
		want := platforms.Only(platforms.DefaultSpec())
		var found *ocispec.Descriptor
		for i, m := range idx.Manifests {
			if m.Platform != nil && want.Match(*m.Platform) {
				found = &idx.Manifests[i]
				break
			}
		}
		if found == nil && len(idx.Manifests) == 1 && idx.Manifests[0].Platform == nil {
			found = &idx.Manifests[0]
		}
		if found == nil {
			return desc, nil, fmt.Errorf("%w: index %s has no manifest for %s", errImage, desc.Digest, platforms.DefaultString())
		}
		desc = *found
	}
}

// readSmallBlob reads a manifest, index or config, checking its size and
// digest.
func readSmallBlob(ctx context.Context, cs content.Provider, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size < 0 || desc.Size > maxManifestBytes {
		return nil, fmt.Errorf("%w: blob %s: %d bytes, at most %d", errImage, desc.Digest, desc.Size, maxManifestBytes)
	}
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%w: blob digest %q: %v", errImage, trunc(desc.Digest.String()), err)
	}
	ra, err := cs.ReaderAt(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("%w: blob %s is not in containerd's content store: %v", errImage, desc.Digest, err)
	}
	defer ra.Close()
	b, err := io.ReadAll(io.LimitReader(content.NewReader(ra), desc.Size+1))
	if err != nil {
		return nil, fmt.Errorf("%w: blob %s: %v", errImage, desc.Digest, err)
	}
	if int64(len(b)) != desc.Size {
		return nil, fmt.Errorf("%w: blob %s: %d bytes in the content store, its descriptor says %d", errImage, desc.Digest, len(b), desc.Size)
	}
	if got := desc.Digest.Algorithm().FromBytes(b); got != desc.Digest {
		return nil, fmt.Errorf("%w: blob %s in containerd's content store has digest %s: it was modified", errImage, desc.Digest, got)
	}
	return b, nil
}

// copyBlob copies a layer from the content store into blobs/, checking its
// size and digest as it goes; a blob that does not match is not kept.
func copyBlob(ctx context.Context, cs content.Provider, desc ocispec.Descriptor, blobs string) error {
	if err := desc.Digest.Validate(); err != nil || desc.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("%w: layer digest %q: want sha256", errImage, trunc(desc.Digest.String()))
	}
	if desc.Size < 0 {
		return fmt.Errorf("%w: layer %s: negative size", errImage, desc.Digest)
	}
	ra, err := cs.ReaderAt(ctx, desc)
	if err != nil {
		return fmt.Errorf("%w: layer %s is not in containerd's content store: %v", errImage, desc.Digest, err)
	}
	defer ra.Close()
	path := filepath.Join(blobs, desc.Digest.Encoded())
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil // the same layer twice in one manifest
	}
	if err != nil {
		return err
	}
	v := desc.Digest.Verifier()
	n, err := io.Copy(io.MultiWriter(f, v), io.LimitReader(content.NewReader(ra), desc.Size+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		err = fmt.Errorf("%w: layer %s: %v", errImage, desc.Digest, err)
	case n != desc.Size:
		err = fmt.Errorf("%w: layer %s: %d bytes in the content store, its descriptor says %d", errImage, desc.Digest, n, desc.Size)
	case !v.Verified():
		err = fmt.Errorf("%w: layer %s in containerd's content store does not match its digest: it was modified", errImage, desc.Digest)
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
