package signing

import (
	"bytes"
	"crypto"
	"fmt"

	"github.com/bulwark-project/bulwark/signing/simplesigning"
)

// The simple-signing payload lives in package simplesigning (standard
// library only, so the policy evaluator can read payloads without linking
// the signature code); these names keep signing's API.

// SimpleSigningType is critical.type of cosign's image signature payload.
const SimpleSigningType = simplesigning.Type

// MaxPayloadSize bounds an image signature payload (D.payload.json).
const MaxPayloadSize = simplesigning.MaxSize

// ValidDigest reports whether d is a digest string in the form used across
// Bulwark: "sha256:" followed by 64 lowercase hex digits.
func ValidDigest(d string) bool { return simplesigning.ValidDigest(d) }

// SimpleSigning is cosign's image signature payload.
type SimpleSigning = simplesigning.Payload

// SimpleSigningCritical is the part of the payload a verifier must check.
type SimpleSigningCritical = simplesigning.Critical

// SimpleSigningPayload returns the payload cosign signs for an image
// (simplesigning.Build).
func SimpleSigningPayload(manifestDigest, dockerReference string) []byte {
	return simplesigning.Build(manifestDigest, dockerReference)
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
		return &PayloadError{Detail: fmt.Sprintf("payload is %d bytes, more than %d", len(payload), MaxPayloadSize)}
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

// ParseSimpleSigning parses a simple-signing payload strictly
// (simplesigning.Parse). It does not check any signature: call it only on
// a payload whose signature verified (VerifyImage does both).
func ParseSimpleSigning(payload []byte) (*SimpleSigning, error) { return simplesigning.Parse(payload) }
