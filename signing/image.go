package signing

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
)

// SimpleSigningType is critical.type of cosign's image signature payload.
const SimpleSigningType = "cosign container image signature"

// MaxPayloadSize bounds an image signature payload (D.payload.json).
const MaxPayloadSize = 64 << 10

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ValidDigest reports whether d is a digest string in the form used across
// Bulwark: "sha256:" followed by 64 lowercase hex digits.
func ValidDigest(d string) bool { return digestRE.MatchString(d) }

// SimpleSigning is cosign's image signature payload, the "simple signing"
// format of containers/image (containers-signature(5)).
type SimpleSigning struct {
	Critical SimpleSigningCritical `json:"critical"`
	// Optional holds annotations; nil when there are none. It is signed
	// but not interpreted.
	Optional map[string]any `json:"optional"`
}

// SimpleSigningCritical is the part of the payload a verifier must check.
type SimpleSigningCritical struct {
	Identity struct {
		DockerReference string `json:"docker-reference"`
	} `json:"identity"`
	Image struct {
		DockerManifestDigest string `json:"docker-manifest-digest"`
	} `json:"image"`
	Type string `json:"type"`
}

// SimpleSigningPayload returns the payload cosign signs for an image: its
// manifest digest ("sha256:<hex>") and the reference the signer claims for it
// (e.g. "registry.example/app"; for a local OCI layout any name the signer
// chooses, or ""). The bytes are what gets signed and must be kept as they
// are (D.payload.json).
func SimpleSigningPayload(manifestDigest, dockerReference string) []byte {
	var p SimpleSigning
	p.Critical.Identity.DockerReference = dockerReference
	p.Critical.Image.DockerManifestDigest = manifestDigest
	p.Critical.Type = SimpleSigningType
	b, err := json.Marshal(p)
	if err != nil { // strings and a nil map: cannot happen
		panic("signing: marshalling simple-signing payload: " + err.Error())
	}
	return b
}

// SignImage signs an image by its manifest digest: it builds the
// simple-signing payload and signs it as a blob. Store both results (see
// ImagePaths); the verifier needs the exact payload bytes.
func SignImage(signer *Signer, manifestDigest, dockerReference string) (payload, sigB64 []byte, err error) {
	if !ValidDigest(manifestDigest) {
		return nil, nil, fmt.Errorf("signing: image manifest digest %q is not sha256:<64 hex>", manifestDigest)
	}
	payload = SimpleSigningPayload(manifestDigest, dockerReference)
	sigB64, err = SignBlob(signer, bytes.NewReader(payload))
	if err != nil {
		return nil, nil, err
	}
	return payload, sigB64, nil
}

// VerifyImage checks an image signature. In order, it checks:
//  1. sigB64 is a well-formed signature that verifies over payload with pub
//     (ErrMalformedSignature, ErrBadSignature);
//  2. payload is a cosign simple-signing payload: JSON, no unknown fields in
//     "critical", critical.type is SimpleSigningType (ErrPayloadType);
//  3. its critical.image.docker-manifest-digest equals manifestDigest, the
//     digest of the image actually being launched (ErrPayloadMismatch).
//
// The claimed docker-reference is not checked: a local OCI layout has no
// registry name to compare it with. Use ParseSimpleSigning to read it.
func VerifyImage(pub crypto.PublicKey, payload, sigB64 []byte, manifestDigest string) error {
	if !ValidDigest(manifestDigest) {
		return fmt.Errorf("signing: expected image digest %q is not sha256:<64 hex>", manifestDigest)
	}
	if len(payload) > MaxPayloadSize {
		return payloadErr("payload is %d bytes, more than %d", len(payload), MaxPayloadSize)
	}
	if err := VerifyBlob(pub, bytes.NewReader(payload), sigB64); err != nil {
		return fmt.Errorf("image signature payload: %w", err)
	}
	p, err := ParseSimpleSigning(payload)
	if err != nil {
		return err
	}
	if p.Critical.Image.DockerManifestDigest != manifestDigest {
		return fmt.Errorf("signing: %w: payload signs %q, image is %q", ErrPayloadMismatch, p.Critical.Image.DockerManifestDigest, manifestDigest)
	}
	return nil
}

func payloadErr(format string, args ...any) error {
	return &PayloadError{Detail: fmt.Sprintf(format, args...)}
}

// ParseSimpleSigning parses a simple-signing payload strictly: one JSON
// object with only "critical" and "optional"; "critical" with only
// "identity", "image" and "type", each present; type SimpleSigningType; a
// well-formed manifest digest. It does not check any signature: call it only
// on a payload whose signature verified (VerifyImage does both).
func ParseSimpleSigning(payload []byte) (*SimpleSigning, error) {
	if len(payload) > MaxPayloadSize {
		return nil, payloadErr("payload is %d bytes, more than %d", len(payload), MaxPayloadSize)
	}
	var top struct {
		Critical json.RawMessage `json:"critical"`
		Optional json.RawMessage `json:"optional"`
	}
	if err := decodeStrict(payload, &top); err != nil {
		return nil, payloadErr("%v", err)
	}
	if len(top.Critical) == 0 {
		return nil, payloadErr("no \"critical\" object")
	}
	var crit struct {
		Identity *struct {
			DockerReference *string `json:"docker-reference"`
		} `json:"identity"`
		Image *struct {
			DockerManifestDigest *string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type *string `json:"type"`
	}
	if err := decodeStrict(top.Critical, &crit); err != nil {
		return nil, payloadErr("critical: %v", err)
	}
	switch {
	case crit.Type == nil:
		return nil, payloadErr("critical.type is missing")
	case *crit.Type != SimpleSigningType:
		return nil, payloadErr("critical.type is %q, want %q", *crit.Type, SimpleSigningType)
	case crit.Image == nil || crit.Image.DockerManifestDigest == nil:
		return nil, payloadErr("critical.image.docker-manifest-digest is missing")
	case !ValidDigest(*crit.Image.DockerManifestDigest):
		return nil, payloadErr("critical.image.docker-manifest-digest %q is not sha256:<64 hex>", *crit.Image.DockerManifestDigest)
	case crit.Identity == nil || crit.Identity.DockerReference == nil:
		return nil, payloadErr("critical.identity.docker-reference is missing")
	}
	out := &SimpleSigning{}
	out.Critical.Type = *crit.Type
	out.Critical.Image.DockerManifestDigest = *crit.Image.DockerManifestDigest
	out.Critical.Identity.DockerReference = *crit.Identity.DockerReference
	if len(top.Optional) > 0 && !bytes.Equal(bytes.TrimSpace(top.Optional), []byte("null")) {
		if err := json.Unmarshal(top.Optional, &out.Optional); err != nil {
			return nil, payloadErr("optional is not an object: %v", err)
		}
	}
	return out, nil
}

// decodeStrict decodes exactly one JSON value into v, rejecting unknown
// fields and trailing data.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}
