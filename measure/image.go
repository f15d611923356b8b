package measure

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Size limits for the JSON documents of an image.
const (
	maxIndexSize    = 4 << 20
	maxManifestSize = 4 << 20
	maxConfigSize   = 8 << 20
	maxLayers       = 1024
	maxIndexDepth   = 4
	maxCandidates   = 1024
)

// DefaultPlatform is the platform picked from a multi-platform image.
const DefaultPlatform = "linux/amd64"

// ImageOptions select and tune how an image is opened. The zero value
// picks DefaultPlatform and hashes layers on every core.
type ImageOptions struct {
	// Manifest, when set, is the digest of the image manifest to use from
	// an index that holds several. It must be one of them.
	Manifest string
	// Platform ("os/arch" or "os/arch/variant") picks the manifest from an
	// index that holds several; DefaultPlatform when empty.
	Platform string
	// Workers is how many layers are hashed at once; GOMAXPROCS when <= 0.
	Workers int
	// Pin keeps every layer blob in sealed memory (a memfd per layer),
	// copied from the same single read that verified it. V1Image needs it:
	// the root filesystem a guest boots is then built from exactly the
	// bytes that were hashed, never from a second read of the files.
	Pin bool
	// MaxUnpacked bounds the uncompressed size of all layers together;
	// DefaultMaxUnpacked when <= 0. Past it OpenImage fails (ErrTooLarge).
	MaxUnpacked int64
}

// LayerInfo describes one verified layer blob.
type LayerInfo struct {
	Digest    string `json:"digest"`     // digest of the blob as stored (compressed or not)
	Size      int64  `json:"size"`       // blob size in bytes
	MediaType string `json:"media_type"` // OCI or Docker layer media type
	DiffID    string `json:"diff_id"`    // digest of the uncompressed tar, from the config
	// StoredDigest, when set, is the digest of the blob as saved in a
	// docker archive, which holds it uncompressed: Digest and Size are then
	// those of its gzip compression (Image.ManifestRecovery).
	StoredDigest string `json:"stored_digest,omitempty"`
}

// Image is an OCI image whose index, manifest, config and every layer blob
// were read and checked against their digests (and sizes). Its identity is
// ManifestDigest. Close it when done: it may hold the archive open.
//
// Each layer blob is read exactly once: hashed against its digest,
// decompressed and hashed against the config's diff_id, and, with
// ImageOptions.Pin, kept in a sealed memfd that V1Image serves. Nothing
// reads the image's files after OpenImage returns.
type Image struct {
	// Source is the path the image was read from.
	Source string `json:"source"`
	// Format is "oci-layout", "oci-archive" (an OCI layout in a tar, which
	// includes `docker save` from Docker 25 on) or "docker-archive" (the
	// older `docker save` format: see SynthesizedManifest).
	Format string `json:"format"`
	// ManifestDigest is the image's identity: the digest of its manifest.
	ManifestDigest string `json:"manifest_digest"`
	// ManifestMediaType is the manifest's media type.
	ManifestMediaType string `json:"manifest_media_type"`
	// ConfigDigest is the digest of the image config blob.
	ConfigDigest string `json:"config_digest"`
	// Platform is os/arch[/variant] from the config.
	Platform string `json:"platform"`
	// Layers are the layer blobs in order, base first.
	Layers []LayerInfo `json:"layers"`
	// SynthesizedManifest is true for docker archives, which carry no
	// manifest: Bulwark rebuilds the one a registry holds for the image
	// (ManifestRecovery says how) and its digest is the identity.
	SynthesizedManifest bool `json:"synthesized_manifest,omitempty"`
	// ManifestRecovery says, for a docker archive, how the registry's
	// manifest was rebuilt: RecoveredAsSaved (gzip layers as saved: the
	// Docker schema 2 manifest of those blobs, as go-containerregistry
	// writes it), RecoveredRecompressed (layers saved uncompressed, as
	// `docker save` does, gzip-compressed again as go-containerregistry
	// compresses them for 'crane push'), or NotRecovered (zstd layers: an
	// OCI manifest of the blobs as saved). DigestHint explains it. "" for
	// OCI layouts and archives.
	ManifestRecovery string `json:"manifest_recovery,omitempty"`

	manifest []byte
	config   []byte
	store    blobStore
	blobs    map[string]string  // digest → name in store
	pinned   map[string]*Pinned // layer digest → its sealed blob (ImageOptions.Pin)
}

// OpenImage reads and verifies the image at path: an OCI image layout
// directory, a tar of one (OCI archive, also what Docker 25+ `docker save`
// writes), or a legacy docker archive. Every blob is hashed while read and
// must match its descriptor's digest and size; a mismatch is an error that
// names the blob. Layers are hashed in parallel.
func OpenImage(ctx context.Context, path string, opts ImageOptions) (*Image, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", path, err)
	}
	var st blobStore
	format := "oci-layout"
	if fi.IsDir() {
		st = &dirStore{root: path}
	} else {
		ts, err := openTarStore(path)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", path, err)
		}
		st = ts
		format = "oci-archive"
	}
	im := &Image{Source: path, Format: format, store: st, blobs: map[string]string{}, pinned: map[string]*Pinned{}}
	switch {
	case st.has("index.json"):
		err = im.loadOCI(ctx, opts)
	case !fi.IsDir() && st.has("manifest.json"):
		im.Format = "docker-archive"
		err = im.loadDocker(ctx, opts)
	case fi.IsDir():
		err = errors.New("not an OCI image layout: no index.json (want a directory with oci-layout, index.json and blobs/)")
	default:
		err = errors.New("not an image archive: neither index.json (OCI) nor manifest.json (docker save) is in it")
	}
	if err != nil {
		im.Close()
		return nil, fmt.Errorf("image %s: %w", path, err)
	}
	return im, nil
}

// Close releases the image source and the pinned layers.
func (im *Image) Close() error {
	for _, p := range im.pinned {
		p.Close()
	}
	return im.store.Close()
}

// RawManifest returns the verified manifest bytes.
func (im *Image) RawManifest() []byte { return im.manifest }

// RawConfig returns the verified config bytes.
func (im *Image) RawConfig() []byte { return im.config }

// ConfigFile parses the verified config.
func (im *Image) ConfigFile() (*v1.ConfigFile, error) {
	return v1.ParseConfigFile(bytes.NewReader(im.config))
}

// blobName is where a content-addressed blob lives in an OCI layout.
func blobName(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// checkHash accepts only sha256 descriptors with a well-formed hex digest,
// so blob names built from them cannot escape the blobs directory.
func checkHash(h v1.Hash) error {
	if h.Algorithm != "sha256" {
		return fmt.Errorf("digest algorithm %q is not supported (want sha256)", truncate(h.Algorithm))
	}
	if _, _, err := ParseDigest(h.String()); err != nil {
		return err
	}
	return nil
}

// readBlob reads a small content-addressed blob whole and verifies it.
func (im *Image) readBlob(what string, d v1.Descriptor, limit int64) ([]byte, error) {
	if err := checkHash(d.Digest); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if d.Size < 0 || d.Size > limit {
		return nil, fmt.Errorf("%s %s: size %d out of range (limit %d)", what, d.Digest, d.Size, limit)
	}
	rc, _, err := im.store.open(blobName(d.Digest))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, d.Digest, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(newVerifyingReader(rc, d.Digest.String(), d.Size))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, d.Digest, err)
	}
	im.blobs[d.Digest.String()] = blobName(d.Digest)
	return b, nil
}

// DigestHint explains, for a docker archive, why its manifest digest may
// not be the registry's and what to do; "" for OCI layouts and archives,
// whose manifest is stored in them. Callers add it to a "signature is for
// another digest" error.
func (im *Image) DigestHint() string {
	const todo = "keep the registry's own manifest with 'launcher image pull -o DIR REF' or 'cosign save --dir DIR REF' and use that directory"
	switch im.ManifestRecovery {
	case RecoveredAsSaved:
		return "a docker archive holds no manifest: Bulwark recomputed it from the saved layers as go-containerregistry (crane) writes it, " +
			"and the registry's differs (pushed by another tool, or with OCI media types), so its digest cannot be recovered from this archive; " + todo
	case RecoveredRecompressed:
		return "a docker archive holds no manifest and this one holds its layers uncompressed (docker save): Bulwark recompressed them as 'crane push' does, " +
			"and the registry's layers were compressed otherwise (e.g. by 'docker push'), so its digest cannot be recovered from this archive; " + todo
	case NotRecovered:
		return "a docker archive holds no manifest and this one has zstd layers, which a Docker manifest cannot name: the registry's digest cannot be recovered from it; " + todo
	}
	return ""
}

func mustHash(s string) v1.Hash {
	h, err := v1.NewHash(s)
	if err != nil {
		panic(err) // only called on digests this package formatted
	}
	return h
}

// verifyingReader hashes what it reads and fails at the end (or as soon as
// the stream is longer than declared) unless size and digest match.
type verifyingReader struct {
	r      io.Reader
	h      hash.Hash
	want   string
	size   int64
	n      int64
	failed error
}

// ErrDigestMismatch is wrapped by every error about a blob whose content
// does not hash to its digest or has the wrong size.
var ErrDigestMismatch = errors.New("content does not match its digest")

func newVerifyingReader(r io.Reader, digest string, size int64) io.Reader {
	return &verifyingReader{r: r, h: sha256.New(), want: digest, size: size}
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.failed != nil {
		return 0, v.failed
	}
	// Read at most one byte past the declared size, to notice a longer blob.
	if rem := v.size + 1 - v.n; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.h.Write(p[:n])
	if v.n > v.size {
		v.failed = fmt.Errorf("%w: longer than the %d bytes its descriptor says", ErrDigestMismatch, v.size)
		return 0, v.failed
	}
	if err == io.EOF {
		if v.n != v.size {
			v.failed = fmt.Errorf("%w: %d bytes, but its descriptor says %d", ErrDigestMismatch, v.n, v.size)
			return n, v.failed
		}
		if got := FormatDigest(SHA256, v.h.Sum(nil)); got != v.want {
			v.failed = fmt.Errorf("%w: it hashes to %s", ErrDigestMismatch, got)
			return n, v.failed
		}
	}
	return n, err
}
