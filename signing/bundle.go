package signing

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"time"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"google.golang.org/protobuf/encoding/protojson"
)

// BundleMediaType is the media type of the bundles SignBundle writes
// (sigstore bundle v0.3, what `cosign sign-blob --new-bundle-format` writes).
const BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"

// MaxBundleSize bounds a bundle read from disk (a key-only bundle is about
// 1 KiB; one with transparency-log entries a few KiB).
const MaxBundleSize = 256 << 10

// KeyHint is the public-key hint cosign puts in a key-based bundle:
// base64(SHA-256(DER SubjectPublicKeyInfo)).
func KeyHint(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// SignBundle signs everything read from r and returns a sigstore bundle
// (JSON, v0.3) holding the message signature over its SHA-256 digest and a
// public-key hint. It has no transparency-log entry and no timestamp: it is
// verified with the public key alone, offline (VerifyBundle, or sigstore-go
// with verify.WithNoObserverTimestamps and verify.WithKey).
func SignBundle(signer *Signer, r io.Reader) ([]byte, error) {
	digest, err := digestReader(r)
	if err != nil {
		return nil, err
	}
	sig, err := signer.SignDigest(digest)
	if err != nil {
		return nil, err
	}
	pb := &protobundle.Bundle{
		MediaType: BundleMediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_PublicKey{
				PublicKey: &protocommon.PublicKeyIdentifier{Hint: KeyHint(signer.Public())},
			},
		},
		Content: &protobundle.Bundle_MessageSignature{
			MessageSignature: &protocommon.MessageSignature{
				MessageDigest: &protocommon.HashOutput{
					Algorithm: protocommon.HashAlgorithm_SHA2_256,
					Digest:    digest,
				},
				Signature: sig,
			},
		},
	}
	b, err := protojson.Marshal(pb)
	if err != nil {
		return nil, fmt.Errorf("signing: encoding bundle: %w", err)
	}
	return b, nil
}

// ParseBundle parses a sigstore bundle (JSON) and checks that it is one this
// package verifies: a message signature (not DSSE) over a SHA-256 digest,
// with a public-key hint as verification material (not a Fulcio
// certificate).
func ParseBundle(bundleJSON []byte) (*bundle.Bundle, error) {
	if len(bundleJSON) > MaxBundleSize {
		return nil, fmt.Errorf("signing: %w: %d bytes, more than %d", ErrMalformedBundle, len(bundleJSON), MaxBundleSize)
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(bundleJSON); err != nil {
		return nil, fmt.Errorf("signing: %w: %v", ErrMalformedBundle, err)
	}
	if b.VerificationMaterial.GetPublicKey() == nil {
		return nil, fmt.Errorf("signing: %w: verification material is not a public key (keyless/certificate bundles are not accepted; sign with a key)", ErrMalformedBundle)
	}
	ms := b.GetMessageSignature()
	if ms == nil {
		return nil, fmt.Errorf("signing: %w: content is not a message signature (DSSE attestations are not accepted)", ErrMalformedBundle)
	}
	if ms.GetMessageDigest().GetAlgorithm() != protocommon.HashAlgorithm_SHA2_256 || len(ms.GetMessageDigest().GetDigest()) != sha256.Size {
		return nil, fmt.Errorf("signing: %w: message digest is not SHA-256", ErrMalformedBundle)
	}
	if len(ms.GetSignature()) == 0 {
		return nil, fmt.Errorf("signing: %w: empty", ErrMalformedSignature)
	}
	return &b, nil
}

// VerifyBundle checks a key-based sigstore bundle (from SignBundle or from
// `cosign sign-blob --new-bundle-format --key`) over everything read from r,
// offline: the bundle parses (ParseBundle), its message digest equals the
// content's SHA-256, the signature verifies with pub, and sigstore-go's
// verifier agrees (key-only policy, no observer timestamps required;
// transparency-log entries, if any, are not checked).
func VerifyBundle(pub crypto.PublicKey, r io.Reader, bundleJSON []byte) error {
	if err := checkPublicKey(pub); err != nil {
		return err
	}
	b, err := ParseBundle(bundleJSON)
	if err != nil {
		return err
	}
	digest, err := digestReader(r)
	if err != nil {
		return err
	}
	ms := b.GetMessageSignature()
	if !bytes.Equal(ms.GetMessageDigest().GetDigest(), digest) {
		return fmt.Errorf("signing: bundle signs another content (digest sha256:%x, content is sha256:%x): %w", ms.GetMessageDigest().GetDigest(), digest, ErrBadSignature)
	}
	if err := VerifyDigest(pub, digest, ms.GetSignature()); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	// The same check again through sigstore-go, the reference verifier.
	tm := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) {
		// The hint is unauthenticated and only selects a key; there is one.
		return root.NewExpiringKey(rawVerifier{pub}, timeZero, timeZero), nil
	})
	v, err := verify.NewVerifier(tm, verify.WithNoObserverTimestamps())
	if err != nil {
		return fmt.Errorf("signing: bundle verifier: %w", err)
	}
	if _, err := v.Verify(b, verify.NewPolicy(verify.WithArtifactDigest("sha256", digest), verify.WithKey())); err != nil {
		return fmt.Errorf("signing: bundle: %w: %v", ErrBadSignature, err)
	}
	return nil
}

var timeZero time.Time
