// Package registry fetches container images from OCI registries into local
// OCI layouts, with the cosign signatures the registry holds for them, so
// that the rest of Bulwark (measure, signing, policy) judges a pulled image
// exactly as a local one: every blob is verified again when it is opened.
package registry

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Limits on what a registry may hand us for a signature.
const (
	maxSignatureLayers = 32
	maxPayloadSize     = 64 << 10
	maxSignatureB64    = 8 << 10
)

// cosign's media type for a signed payload and the annotation that holds
// its signature, as `cosign sign` stores them in the registry.
const (
	simpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	signatureAnnotation    = "dev.cosignproject.cosign/signature"
)

// ErrTagNeedsFlag is returned for a reference by tag without
// Options.AllowTag: a tag can move, so it is resolved only when asked.
var ErrTagNeedsFlag = errors.New("the image is named by tag, which can move: name it by digest (REPO@sha256:...), or allow the tag explicitly")

// Options tune Pull. The zero value pulls by digest only, for linux/amd64,
// with credentials from the usual docker config (~/.docker/config.json,
// DOCKER_CONFIG).
type Options struct {
	// AllowTag resolves a tag to its current digest; that digest is what
	// is pulled (and measured).
	AllowTag bool
	// Platform picks the image from an index ("os/arch"); default linux/amd64.
	Platform string
	// Insecure allows plain HTTP (a registry on loopback in tests).
	Insecure bool
}

// Signature is one cosign signature found in the registry for the image:
// the simple-signing payload and its signature, base64 as cosign stores it
// (the form signing.VerifyImage and the DIR.sig side-car take).
type Signature struct {
	Payload      []byte
	SignatureB64 []byte
}

// Result is what Pull fetched.
type Result struct {
	Ref        string      // the reference as given
	Digest     string      // the pulled image's manifest digest
	Signatures []Signature // cosign's signatures for Digest, in registry order
}

// Pull fetches ref into a new OCI image layout at dir (which must not exist
// or be empty) and returns its digest and the cosign signatures stored in
// the registry for that digest (the tag sha256-<hex>.sig). It checks what it
// can on the way (ggcr verifies each blob's digest as it is written), but
// the caller opens the layout with measure.OpenImage, which verifies every
// blob again: nothing here is trusted.
func Pull(ctx context.Context, ref string, dir string, opts Options) (*Result, error) {
	r, err := parseRef(ref, opts)
	if err != nil {
		return nil, err
	}
	plat := opts.Platform
	if plat == "" {
		plat = "linux/amd64"
	}
	p, err := v1.ParsePlatform(plat)
	if err != nil {
		return nil, fmt.Errorf("platform %q: %w", plat, err)
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithPlatform(*p)}
	img, err := remote.Image(r, ropts...)
	if err != nil {
		return nil, fmt.Errorf("pulling %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("pulling %s: %w", ref, err)
	}
	// When the reference named an index, the platform's image was chosen:
	// its own digest is what is pulled, measured and must be signed.
	if err := writeLayout(dir, img); err != nil {
		return nil, err
	}
	sigs, err := cosignSignatures(r.Context().Digest(d.String()), ropts)
	if err != nil {
		return nil, err
	}
	return &Result{Ref: ref, Digest: d.String(), Signatures: sigs}, nil
}

// parseRef parses an image reference; one without a digest is a tag
// (":latest" when none is written), refused unless opts.AllowTag.
func parseRef(ref string, opts Options) (name.Reference, error) {
	var nameOpts []name.Option
	if opts.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("%s: not an image reference: %w", ref, err)
	}
	if _, isTag := r.(name.Tag); isTag && !opts.AllowTag {
		return nil, fmt.Errorf("%s: %w", ref, ErrTagNeedsFlag)
	}
	return r, nil
}

// writeLayout writes img as the one image of a new OCI layout at dir.
func writeLayout(dir string, img v1.Image) error {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return fmt.Errorf("%s exists and is not empty: give a new directory", dir)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("writing %s: %w", dir, err)
	}
	if err := p.AppendImage(img); err != nil {
		return fmt.Errorf("writing %s: %w", dir, err)
	}
	return nil
}

// cosignSignatures reads cosign's signature image for digest (tag
// sha256-<hex>.sig in the same repository): one layer per signature, the
// payload as its blob and the base64 signature in an annotation. None is
// not an error (an unsigned image); a malformed one is.
func cosignSignatures(d name.Digest, ropts []remote.Option) ([]Signature, error) {
	tag := d.Context().Tag(strings.Replace(d.DigestStr(), ":", "-", 1) + ".sig")
	img, err := remote.Image(tag, ropts...)
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
			return nil, nil // not signed
		}
		return nil, fmt.Errorf("reading cosign signatures (%s): %w", tag, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("cosign signatures (%s): %w", tag, err)
	}
	if len(m.Layers) > maxSignatureLayers {
		return nil, fmt.Errorf("cosign signatures (%s): %d layers, more than %d", tag, len(m.Layers), maxSignatureLayers)
	}
	var out []Signature
	for i, l := range m.Layers {
		if l.MediaType != types.MediaType(simpleSigningMediaType) {
			continue
		}
		b64 := l.Annotations[signatureAnnotation]
		if b64 == "" || len(b64) > maxSignatureB64 {
			return nil, fmt.Errorf("cosign signatures (%s): layer %d has no usable %s annotation", tag, i, signatureAnnotation)
		}
		if _, err := base64.StdEncoding.DecodeString(b64); err != nil {
			return nil, fmt.Errorf("cosign signatures (%s): layer %d: signature is not base64: %w", tag, i, err)
		}
		if l.Size < 0 || l.Size > maxPayloadSize {
			return nil, fmt.Errorf("cosign signatures (%s): layer %d: payload of %d bytes", tag, i, l.Size)
		}
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			return nil, fmt.Errorf("cosign signatures (%s): layer %d: %w", tag, i, err)
		}
		rc, err := layer.Compressed() // the payload as stored; ggcr checks its digest at EOF
		if err != nil {
			return nil, fmt.Errorf("cosign signatures (%s): layer %d: %w", tag, i, err)
		}
		payload, err := io.ReadAll(io.LimitReader(rc, maxPayloadSize+1))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("cosign signatures (%s): layer %d: %w", tag, i, err)
		}
		if int64(len(payload)) != l.Size {
			return nil, fmt.Errorf("cosign signatures (%s): layer %d: payload is %d bytes, its descriptor says %d", tag, i, len(payload), l.Size)
		}
		out = append(out, Signature{Payload: payload, SignatureB64: []byte(b64)})
	}
	return out, nil
}
