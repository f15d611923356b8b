package signing

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
)

// MaxSignatureSize bounds a raw signature (RSA-8192 is 1024 bytes; ECDSA
// P-256 DER at most 72).
const MaxSignatureSize = 2048

// MaxSignatureFileSize bounds a base64 signature file (F.sig) read from disk.
const MaxSignatureFileSize = 4096

// SignBlob signs the SHA-256 digest of everything read from r and returns the
// signature base64-encoded (standard alphabet, no newline), exactly what
// `cosign sign-blob --key` writes to its --output-signature file.
func SignBlob(signer *Signer, r io.Reader) (sigB64 []byte, err error) {
	digest, err := digestReader(r)
	if err != nil {
		return nil, err
	}
	sig, err := signer.SignDigest(digest)
	if err != nil {
		return nil, err
	}
	return EncodeSignature(sig), nil
}

// VerifyBlob checks a base64 signature (as in F.sig, from SignBlob or from
// `cosign sign-blob`) over everything read from r. It returns an error
// wrapping ErrMalformedSignature or ErrBadSignature when the check fails.
func VerifyBlob(pub crypto.PublicKey, r io.Reader, sigB64 []byte) error {
	sig, err := DecodeSignature(sigB64)
	if err != nil {
		return err
	}
	digest, err := digestReader(r)
	if err != nil {
		return err
	}
	return VerifyDigest(pub, digest, sig)
}

// VerifyDigest checks a raw signature (ASN.1 DER for ECDSA, PKCS#1 v1.5 for
// RSA) over a SHA-256 digest, for callers that only have the digest.
func VerifyDigest(pub crypto.PublicKey, sha256Digest []byte, sigDER []byte) error {
	if err := checkPublicKey(pub); err != nil {
		return err
	}
	if len(sha256Digest) != sha256.Size {
		return fmt.Errorf("signing: digest is %d bytes, want %d (SHA-256)", len(sha256Digest), sha256.Size)
	}
	if len(sigDER) == 0 {
		return fmt.Errorf("signing: %w: empty", ErrMalformedSignature)
	}
	if len(sigDER) > MaxSignatureSize {
		return fmt.Errorf("signing: %w: %d bytes, more than %d", ErrMalformedSignature, len(sigDER), MaxSignatureSize)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !isECDSASignatureDER(sigDER) {
			return fmt.Errorf("signing: %w: not an ASN.1 DER ECDSA signature", ErrMalformedSignature)
		}
		if !ecdsa.VerifyASN1(k, sha256Digest, sigDER) {
			return fmt.Errorf("signing: key %s: %w", KeyID(pub), ErrBadSignature)
		}
		return nil
	case *rsa.PublicKey:
		if len(sigDER) != k.Size() {
			return fmt.Errorf("signing: %w: %d bytes, an RSA-%d signature has %d", ErrMalformedSignature, len(sigDER), k.N.BitLen(), k.Size())
		}
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, sha256Digest, sigDER); err != nil {
			return fmt.Errorf("signing: key %s: %w", KeyID(pub), ErrBadSignature)
		}
		return nil
	}
	return fmt.Errorf("signing: %w: %T", ErrUnsupportedKey, pub) // unreachable after checkPublicKey
}

// EncodeSignature base64-encodes a raw signature as cosign does.
func EncodeSignature(sig []byte) []byte {
	out := make([]byte, base64.StdEncoding.EncodedLen(len(sig)))
	base64.StdEncoding.Encode(out, sig)
	return out
}

// DecodeSignature decodes a base64 signature as found in a .sig file.
// Surrounding whitespace (a trailing newline) is ignored; anything else that
// is not standard base64 is ErrMalformedSignature.
func DecodeSignature(sigB64 []byte) ([]byte, error) {
	s := bytes.TrimSpace(sigB64)
	if len(s) == 0 {
		return nil, fmt.Errorf("signing: %w: empty signature", ErrMalformedSignature)
	}
	if len(s) > base64.StdEncoding.EncodedLen(MaxSignatureSize) {
		return nil, fmt.Errorf("signing: %w: %d bytes of base64, too long for a signature", ErrMalformedSignature, len(s))
	}
	sig := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Strict().Decode(sig, s)
	if err != nil {
		return nil, fmt.Errorf("signing: %w: not base64 (%v)", ErrMalformedSignature, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("signing: %w: empty signature", ErrMalformedSignature)
	}
	return sig[:n], nil
}

func digestReader(r io.Reader) ([]byte, error) {
	if r == nil {
		return nil, fmt.Errorf("signing: no content to digest")
	}
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return nil, fmt.Errorf("signing: reading content: %w", err)
	}
	return h.Sum(nil), nil
}

// isECDSASignatureDER reports whether b is exactly one DER SEQUENCE of two
// INTEGERs, the only form ecdsa.VerifyASN1 should be given. (VerifyASN1 also
// rejects everything else; this check lets errors say "malformed" rather
// than "does not verify".)
func isECDSASignatureDER(b []byte) bool {
	// SEQUENCE, short-form length (a P-256 signature is at most 72 bytes).
	if len(b) < 8 || b[0] != 0x30 || b[1] >= 0x80 || int(b[1]) != len(b)-2 {
		return false
	}
	rest := b[2:]
	for range 2 {
		if len(rest) < 3 || rest[0] != 0x02 || rest[1] >= 0x80 || rest[1] == 0 || int(rest[1]) > len(rest)-2 {
			return false
		}
		rest = rest[2+int(rest[1]):]
	}
	return len(rest) == 0
}
