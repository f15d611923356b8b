// docker save tarballs: manifest.json and its layers, as an OCI image.

package measure

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

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
