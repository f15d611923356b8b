// OCI image layouts and archives: indexes, platform choice, manifests.

package measure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

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
