package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bulwark-project/bulwark/internal/fsutil"
)

// Limits on what a saved layout may hand us.
const (
	maxLayoutIndex    = 4 << 20
	maxLayoutManifest = 4 << 20
)

// cosignSigsKind is the index annotation value 'cosign save' gives the
// manifest that holds an image's signatures.
const cosignSigsKind = "dev.cosignproject.cosign/sigs"

// LayoutSignatures reads the cosign signatures that 'cosign save' stored
// inside an OCI layout directory: the index entry annotated
// kind=dev.cosignproject.cosign/sigs, one layer per signature (payload as
// the blob, base64 signature in an annotation). Every blob read is checked
// against its digest and bounded. A layout without such an entry gives
// (nil, nil); the caller still verifies each signature against the image's
// measured digest.
func LayoutSignatures(dir string) ([]Signature, error) {
	raw, err := fsutil.ReadFileLimit(filepath.Join(dir, "index.json"), maxLayoutIndex)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%s/index.json: %w", dir, err)
	}
	var out []Signature
	for _, d := range idx.Manifests {
		if d.Annotations["kind"] != cosignSigsKind {
			continue
		}
		mb, err := readLayoutBlob(dir, d.Digest, maxLayoutManifest)
		if err != nil {
			return nil, fmt.Errorf("cosign signatures in %s: %w", dir, err)
		}
		m, err := v1.ParseManifest(bytes.NewReader(mb))
		if err != nil {
			return nil, fmt.Errorf("cosign signatures in %s: %w", dir, err)
		}
		if len(m.Layers) > maxSignatureLayers {
			return nil, fmt.Errorf("cosign signatures in %s: %d layers, more than %d", dir, len(m.Layers), maxSignatureLayers)
		}
		for i, l := range m.Layers {
			if string(l.MediaType) != simpleSigningMediaType {
				continue
			}
			b64 := l.Annotations[signatureAnnotation]
			if b64 == "" || len(b64) > maxSignatureB64 {
				return nil, fmt.Errorf("cosign signatures in %s: layer %d has no usable %s annotation", dir, i, signatureAnnotation)
			}
			if _, err := base64.StdEncoding.DecodeString(b64); err != nil {
				return nil, fmt.Errorf("cosign signatures in %s: layer %d: signature is not base64: %w", dir, i, err)
			}
			payload, err := readLayoutBlob(dir, l.Digest, maxPayloadSize)
			if err != nil {
				return nil, fmt.Errorf("cosign signatures in %s: layer %d: %w", dir, i, err)
			}
			out = append(out, Signature{Payload: payload, SignatureB64: []byte(b64)})
		}
	}
	return out, nil
}

// readLayoutBlob reads blobs/sha256/<hex> of a layout, at most limit bytes,
// and checks it hashes to h.
func readLayoutBlob(dir string, h v1.Hash, limit int64) ([]byte, error) {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 || strings.Trim(h.Hex, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("blob %s: want a sha256 digest", h)
	}
	b, err := fsutil.ReadFileLimit(filepath.Join(dir, "blobs", "sha256", h.Hex), limit)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != h.Hex {
		return nil, fmt.Errorf("blob %s: its content hashes to sha256:%x", h, sum)
	}
	return b, nil
}
