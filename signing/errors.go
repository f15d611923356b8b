package signing

import (
	"errors"

	"github.com/bulwark-project/bulwark/signing/simplesigning"
)

// The error classes callers branch on. Every error this package returns for a
// failed check wraps exactly one of them (test with errors.Is); the wrapping
// message names the artifact part and what to do next.
var (
	// ErrBadSignature: the signature is well formed but does not verify with
	// this key. Either the artifact was modified after signing or it was
	// signed by another key; cryptography cannot tell which.
	ErrBadSignature = errors.New("signature does not verify with this key (artifact modified, or signed by another key)")
	// ErrMalformedSignature: the signature bytes are not a signature at all
	// (not base64, not ASN.1, wrong length, empty).
	ErrMalformedSignature = errors.New("malformed signature")
	// ErrNoSignature: no signature was found where one was expected.
	ErrNoSignature = errors.New("no signature found")
	// ErrPayloadMismatch: an image signature payload names another manifest
	// digest than the image being verified.
	ErrPayloadMismatch = errors.New("signature payload is for another image digest")
	// ErrPayloadType: an image signature payload is not a cosign simple-signing
	// payload (wrong critical.type or malformed JSON).
	ErrPayloadType = simplesigning.ErrType
	// ErrUnsupportedKey: the key is not one cosign uses by default for
	// key-based signing and this package supports (ECDSA P-256, RSA ≥ 2048).
	ErrUnsupportedKey = errors.New("unsupported key type")
	// ErrKeyDecrypt: the private key did not decrypt: wrong password, or the
	// key file is corrupted.
	ErrKeyDecrypt = errors.New("private key does not decrypt (wrong password or corrupted key file)")
	// ErrMalformedKey: the key file is not a key in a format this package reads.
	ErrMalformedKey = errors.New("malformed key")
	// ErrMalformedBundle: a sigstore bundle could not be parsed or is of a
	// kind this package does not verify (certificate/keyless, DSSE).
	ErrMalformedBundle = errors.New("malformed or unsupported sigstore bundle")
)

// PayloadError says why a payload is not a cosign simple-signing payload.
// It matches ErrPayloadType (errors.Is).
type PayloadError = simplesigning.Error
