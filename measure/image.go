package measure

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
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

type candidate struct {
	desc v1.Descriptor
}

func (c candidate) platform() string {
	if c.desc.Platform == nil {
		return ""
	}
	return c.desc.Platform.String()
}

func (im *Image) loadOCI(ctx context.Context, opts ImageOptions) error {
	rc, size, err := im.store.open("index.json")
	if err != nil {
		return err
	}
	if size > maxIndexSize {
		rc.Close()
		return fmt.Errorf("index.json: %d bytes, more than %d", size, maxIndexSize)
	}
	raw, err := io.ReadAll(io.LimitReader(rc, maxIndexSize))
	rc.Close()
	if err != nil {
		return fmt.Errorf("index.json: %w", err)
	}
	var cands []candidate
	seen := map[string]bool{}
	if err := im.collect("index.json", raw, 0, &cands, seen); err != nil {
		return err
	}
	chosen, byPlatform, err := choose(cands, opts)
	if err != nil {
		return err
	}
	im.manifest, err = im.readBlob("manifest", chosen.desc, maxManifestSize)
	if err != nil {
		return err
	}
	im.ManifestDigest = chosen.desc.Digest.String()
	m, err := v1.ParseManifest(bytes.NewReader(im.manifest))
	if err != nil {
		return fmt.Errorf("manifest %s: %w", im.ManifestDigest, err)
	}
	mt := m.MediaType
	if mt == "" {
		mt = chosen.desc.MediaType
	}
	if mt != types.OCIManifestSchema1 && mt != types.DockerManifestSchema2 {
		return fmt.Errorf("manifest %s: media type %q is not an image manifest", im.ManifestDigest, truncate(string(mt)))
	}
	if chosen.desc.MediaType != "" && m.MediaType != "" && chosen.desc.MediaType != m.MediaType {
		return fmt.Errorf("manifest %s: media type %q differs from its descriptor's %q", im.ManifestDigest, m.MediaType, chosen.desc.MediaType)
	}
	im.ManifestMediaType = string(mt)
	if err := im.loadConfig(m.Config); err != nil {
		return err
	}
	cfg, err := im.ConfigFile()
	if err != nil {
		return fmt.Errorf("config %s: %w", im.ConfigDigest, err)
	}
	im.Platform = configPlatform(cfg)
	if byPlatform && !platformMatches(im.Platform, wantPlatform(opts)) {
		return fmt.Errorf("manifest %s was chosen for platform %s, but its config says %s", im.ManifestDigest, wantPlatform(opts), im.Platform)
	}
	if len(m.Layers) > maxLayers {
		return fmt.Errorf("manifest %s: %d layers, more than %d", im.ManifestDigest, len(m.Layers), maxLayers)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return fmt.Errorf("manifest %s has %d layers but config %s lists %d diff_ids", im.ManifestDigest, len(m.Layers), im.ConfigDigest, len(cfg.RootFS.DiffIDs))
	}
	jobs := make([]layerJob, len(m.Layers))
	for i, l := range m.Layers {
		if err := checkLayerType(l.MediaType); err != nil {
			return fmt.Errorf("layer %d (%s): %w", i, l.Digest, err)
		}
		if err := checkHash(l.Digest); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		if l.Size < 0 {
			return fmt.Errorf("layer %d (%s): negative size", i, l.Digest)
		}
		im.Layers = append(im.Layers, LayerInfo{Digest: l.Digest.String(), Size: l.Size, MediaType: string(l.MediaType), DiffID: cfg.RootFS.DiffIDs[i].String()})
		im.blobs[l.Digest.String()] = blobName(l.Digest)
		jobs[i] = layerJob{index: i, name: blobName(l.Digest), digest: l.Digest.String(), size: l.Size, diffID: cfg.RootFS.DiffIDs[i].String()}
	}
	if err := im.verifyLayers(ctx, jobs, opts); err != nil {
		return err
	}
	im.keep(jobs)
	return nil
}

// keep takes the verified jobs' pinned blobs.
func (im *Image) keep(jobs []layerJob) {
	for _, j := range jobs {
		if j.pinned != nil {
			if old := im.pinned[j.digest]; old != nil {
				old.Close() // the same blob listed twice
			}
			im.pinned[j.digest] = j.pinned
		}
	}
}

func (im *Image) loadConfig(d v1.Descriptor) error {
	switch d.MediaType {
	case types.OCIConfigJSON, types.DockerConfigJSON:
	default:
		return fmt.Errorf("config %s: media type %q is not an image config (is this an artifact rather than a container image?)", d.Digest, truncate(string(d.MediaType)))
	}
	b, err := im.readBlob("config", d, maxConfigSize)
	if err != nil {
		return err
	}
	im.config = b
	im.ConfigDigest = d.Digest.String()
	return nil
}

func checkLayerType(mt types.MediaType) error {
	switch mt {
	case types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer, types.DockerLayer, types.DockerUncompressedLayer:
		return nil
	}
	return fmt.Errorf("unsupported layer media type %q", truncate(string(mt)))
}

// collect walks an index (and nested indexes) and gathers image manifests.
func (im *Image) collect(what string, raw []byte, depth int, out *[]candidate, seen map[string]bool) error {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	for _, d := range idx.Manifests {
		if cosignArtifact(d) {
			continue // cosign save's signatures, attestations, SBOMs: not images
		}
		switch d.MediaType {
		case types.OCIManifestSchema1, types.DockerManifestSchema2:
			if err := checkHash(d.Digest); err != nil {
				return fmt.Errorf("%s: manifest descriptor: %w", what, err)
			}
			if seen[d.Digest.String()] {
				continue
			}
			seen[d.Digest.String()] = true
			if len(*out) == maxCandidates {
				return fmt.Errorf("%s: more than %d image manifests", what, maxCandidates)
			}
			*out = append(*out, candidate{desc: d})
		case types.OCIImageIndex, types.DockerManifestList:
			if depth == maxIndexDepth {
				return fmt.Errorf("%s: indexes nested more than %d deep", what, maxIndexDepth)
			}
			b, err := im.readBlob("index", d, maxIndexSize)
			if err != nil {
				return err
			}
			if err := im.collect("index "+d.Digest.String(), b, depth+1, out, seen); err != nil {
				return err
			}
		default:
			// Other artifacts (signatures, attestations) are not images.
		}
	}
	return nil
}

// CosignKindAnnotation is the index annotation 'cosign save' puts on each
// manifest of a layout: the image ("dev.cosignproject.cosign/image") and
// its signatures, attestations and SBOMs (".../sigs", ".../atts",
// ".../sboms"), which are manifests too but not images to run.
const CosignKindAnnotation = "kind"

// cosignArtifact reports whether an index entry is one of cosign's own
// artifacts (signatures, attestations, SBOMs) rather than an image.
func cosignArtifact(d v1.Descriptor) bool {
	k := d.Annotations[CosignKindAnnotation]
	return strings.HasPrefix(k, "dev.cosignproject.cosign/") && k != "dev.cosignproject.cosign/image"
}

// configPlatform is os/arch[/variant] from a config ("" when it says nothing).
func configPlatform(cfg *v1.ConfigFile) string {
	if cfg.OS == "" && cfg.Architecture == "" {
		return ""
	}
	p := cfg.OS + "/" + cfg.Architecture
	if cfg.Variant != "" {
		p += "/" + cfg.Variant
	}
	return p
}

func wantPlatform(opts ImageOptions) string {
	if opts.Platform == "" {
		return DefaultPlatform
	}
	return opts.Platform
}

// platformMatches compares os/arch[/variant]; a want without variant
// matches any variant.
func platformMatches(got, want string) bool {
	if got == want {
		return true
	}
	return strings.Count(want, "/") == 1 && strings.HasPrefix(got, want+"/")
}

// choose picks the manifest to measure; byPlatform reports whether the
// platform decided (so the config must agree).
func choose(cands []candidate, opts ImageOptions) (candidate, bool, error) {
	if len(cands) == 0 {
		return candidate{}, false, errors.New("index.json lists no image manifest")
	}
	list := func() string {
		var b strings.Builder
		for _, c := range cands {
			p := c.platform()
			if p == "" {
				p = "platform not stated"
			}
			fmt.Fprintf(&b, "\n  %s (%s)", c.desc.Digest, p)
		}
		return b.String()
	}
	if opts.Manifest != "" {
		for _, c := range cands {
			if c.desc.Digest.String() == opts.Manifest {
				return c, false, nil
			}
		}
		return candidate{}, false, fmt.Errorf("manifest %s is not in the image; it has:%s", truncate(opts.Manifest), list())
	}
	if len(cands) == 1 {
		// The only image: an explicit --platform is checked against its
		// config (descriptors in index.json often state no platform).
		return cands[0], opts.Platform != "", nil
	}
	want := wantPlatform(opts)
	var match []candidate
	for _, c := range cands {
		if platformMatches(c.platform(), want) {
			match = append(match, c)
		}
	}
	if len(match) == 1 {
		return match[0], true, nil
	}
	return candidate{}, false, fmt.Errorf("the image index holds %d image manifests and %d are for %s; choose one by digest (launcher: --image-manifest DIGEST) or by platform (--platform OS/ARCH):%s",
		len(cands), len(match), want, list())
}

// loadDocker reads a legacy docker archive (manifest.json naming a config
// file and layer tarballs). Such archives carry no manifest, so one is
// synthesized; the config's diff_ids must match the layers' contents.
func (im *Image) loadDocker(ctx context.Context, opts ImageOptions) error {
	im.SynthesizedManifest = true
	rc, size, err := im.store.open("manifest.json")
	if err != nil {
		return err
	}
	if size > maxManifestSize {
		rc.Close()
		return fmt.Errorf("manifest.json: %d bytes, more than %d", size, maxManifestSize)
	}
	var tm tarball.Manifest
	err = json.NewDecoder(io.LimitReader(rc, maxManifestSize)).Decode(&tm)
	rc.Close()
	if err != nil {
		return fmt.Errorf("manifest.json: %w", err)
	}
	if len(tm) != 1 {
		return fmt.Errorf("manifest.json lists %d images; only single-image docker archives are supported (save one image, or use an OCI layout)", len(tm))
	}
	desc := tm[0]
	cname := cleanMember(desc.Config)
	crc, csize, err := im.store.open(cname)
	if err != nil {
		return fmt.Errorf("config %s: %w", cname, err)
	}
	if csize > maxConfigSize {
		crc.Close()
		return fmt.Errorf("config %s: %d bytes, more than %d", cname, csize, maxConfigSize)
	}
	im.config, err = io.ReadAll(crc)
	crc.Close()
	if err != nil {
		return fmt.Errorf("config %s: %w", cname, err)
	}
	sum := sha256.Sum256(im.config)
	im.ConfigDigest = FormatDigest(SHA256, sum[:])
	// The config's file name is its digest (<hex>.json or blobs/sha256/<hex>): check it.
	base := strings.TrimSuffix(cname[strings.LastIndex(cname, "/")+1:], ".json")
	if len(base) == 64 && base != hex.EncodeToString(sum[:]) {
		return fmt.Errorf("config %s: content hashes to %s, but its name says sha256:%s", cname, im.ConfigDigest, base)
	}
	im.blobs[im.ConfigDigest] = cname
	cfg, err := im.ConfigFile()
	if err != nil {
		return fmt.Errorf("config %s: %w", cname, err)
	}
	im.Platform = configPlatform(cfg)
	if opts.Platform != "" && !platformMatches(im.Platform, opts.Platform) {
		return fmt.Errorf("the archive's image is for %s, not %s", im.Platform, opts.Platform)
	}
	if len(desc.Layers) > maxLayers {
		return fmt.Errorf("manifest.json: %d layers, more than %d", len(desc.Layers), maxLayers)
	}
	if len(cfg.RootFS.DiffIDs) != len(desc.Layers) {
		return fmt.Errorf("manifest.json lists %d layers but config %s lists %d diff_ids", len(desc.Layers), im.ConfigDigest, len(cfg.RootFS.DiffIDs))
	}
	jobs := make([]layerJob, len(desc.Layers))
	for i, name := range desc.Layers {
		name = cleanMember(name)
		_, lsize, err := im.store.open(name)
		if err != nil {
			return fmt.Errorf("layer %d (%s): %w", i, name, err)
		}
		jobs[i] = layerJob{index: i, name: name, size: lsize, diffID: cfg.RootFS.DiffIDs[i].String(), recompress: true}
	}
	if err := im.verifyLayers(ctx, jobs, opts); err != nil {
		return err
	}
	im.ManifestRecovery = RecoveredAsSaved
	for _, j := range jobs {
		switch j.kind {
		case "none":
			im.ManifestRecovery = RecoveredRecompressed
		case "gzip":
		default:
			im.ManifestRecovery = NotRecovered
		}
		if im.ManifestRecovery == NotRecovered {
			break
		}
	}
	var m v1.Manifest
	if im.ManifestRecovery == NotRecovered {
		// A zstd layer: a Docker manifest cannot describe it, and nothing
		// says what the registry held. An OCI manifest of the blobs as saved.
		m = v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
			Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(im.config)), Digest: mustHash(im.ConfigDigest)}}
		for i, j := range jobs {
			mt := types.OCIUncompressedLayer
			switch j.kind {
			case "gzip":
				mt = types.OCILayer
			case "zstd":
				mt = types.OCILayerZStd
			}
			m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Size: j.size, Digest: mustHash(j.digest)})
			im.Layers = append(im.Layers, LayerInfo{Digest: j.digest, Size: j.size, MediaType: string(mt), DiffID: cfg.RootFS.DiffIDs[i].String()})
		}
	} else {
		// The Docker schema 2 manifest a registry holds for these blobs,
		// byte for byte as go-containerregistry's tarball package writes it
		// (and 'crane push' uploads it): gzip layers as saved, uncompressed
		// ones recompressed as that package compresses them.
		m = v1.Manifest{SchemaVersion: 2, MediaType: types.DockerManifestSchema2,
			Config: v1.Descriptor{MediaType: types.DockerConfigJSON, Size: int64(len(im.config)), Digest: mustHash(im.ConfigDigest)}}
		for i, j := range jobs {
			li := LayerInfo{Digest: j.digest, Size: j.size, MediaType: string(types.DockerLayer), DiffID: cfg.RootFS.DiffIDs[i].String()}
			if j.kind == "none" {
				li.Digest, li.Size, li.StoredDigest = j.gzDigest, j.gzSize, j.digest
			}
			m.Layers = append(m.Layers, v1.Descriptor{MediaType: types.DockerLayer, Size: li.Size, Digest: mustHash(li.Digest)})
			im.Layers = append(im.Layers, li)
		}
	}
	for i := range jobs {
		im.blobs[jobs[i].digest] = jobs[i].name
		// Pinned by the digest the manifest names; the sealed bytes are
		// the blob as saved (Pinned.Digest).
		jobs[i].digest = im.Layers[i].Digest
	}
	im.keep(jobs)
	im.manifest, err = json.Marshal(m)
	if err != nil {
		return err
	}
	im.ManifestDigest = DigestBytes(SHA256, im.manifest)
	im.ManifestMediaType = string(m.MediaType)
	return nil
}

// How a docker archive's manifest digest was recovered (Image.ManifestRecovery).
const (
	// RecoveredAsSaved: every layer is saved as its gzip blob, and the
	// manifest is the Docker schema 2 manifest of those blobs as
	// go-containerregistry writes it: the registry's digest for a Docker
	// media type image pushed with go-containerregistry (crane, ko) or
	// saved from the registry by it ('crane pull').
	RecoveredAsSaved = "as-saved"
	// RecoveredRecompressed: some layers are saved uncompressed (what
	// `docker save` writes) and were gzip-compressed as
	// go-containerregistry compresses them: the registry's digest when the
	// image was pushed from such an archive by it ('crane push'), not when
	// another tool compressed the layers ('docker push').
	RecoveredRecompressed = "recompressed"
	// NotRecovered: a zstd layer, which a Docker manifest cannot name; the
	// manifest is an OCI manifest of the blobs as saved, not a registry's.
	NotRecovered = "not-recoverable"
)

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
