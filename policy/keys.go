package policy

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/bulwark-project/bulwark/internal/fsutil"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

// ParsePublicKey reads one PEM public key (SubjectPublicKeyInfo, as cosign
// and 'launcher keygen' write) for use as a signer named name.
//
// Only keys that can verify a signature from a SHA-256 digest alone are
// accepted: ECDSA P-256/P-384/P-521 (cosign's default is P-256) and RSA of
// at least 2048 bits. Ed25519 is refused because kernel and initrd
// signatures are checked from their digest, not their bytes.
func ParsePublicKey(name string, pemBytes []byte) (*Signer, error) {
	block, rest := pem.Decode(bytes.TrimSpace(pemBytes))
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("more than one PEM block; give one key per signer")
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("PEM block is %q, want \"PUBLIC KEY\" (never put a private key in a policy)", block.Type)
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pem.EncodeToMemory(block))
	if err != nil {
		return nil, fmt.Errorf("unparsable public key: %w", err)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return nil, errors.New("unsupported ECDSA curve")
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits is too small (want at least 2048)", k.N.BitLen())
		}
	default:
		return nil, fmt.Errorf("unsupported key type %T: artifact signatures are verified from their SHA-256 digest, which needs ECDSA (cosign's default) or RSA", pub)
	}
	fp, err := Fingerprint(pub)
	if err != nil {
		return nil, err
	}
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	return &Signer{Name: name, Fingerprint: fp, Key: pub, verifier: v}, nil
}

// LoadPublicKeyFile reads a PEM public key file (e.g. an admin key for
// signed policies); the signer is named after the file.
func LoadPublicKeyFile(path string) (*Signer, error) {
	data, err := fsutil.ReadFileLimit(path, MaxKeySize)
	if err != nil {
		return nil, err
	}
	s, err := ParsePublicKey(path, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Fingerprint returns "sha256:<hex>" of a public key's DER SubjectPublicKeyInfo.
func Fingerprint(pub crypto.PublicKey) (string, error) {
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		return "", fmt.Errorf("encoding public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// short shortens a "sha256:<hex>" value for reasons: 16 hex digits.
func short(d string) string {
	if len(d) > len("sha256:")+16 {
		return d[:len("sha256:")+16] + "…"
	}
	return d
}

// String names the signer with a short fingerprint, as reasons show it.
func (s *Signer) String() string { return s.Name + " (" + short(s.Fingerprint) + ")" }

// verifyDigest checks an ASN.1 signature over the blob whose SHA-256 is digest.
func (s *Signer) verifyDigest(digest, sig []byte) bool {
	v, err := s.getVerifier()
	if err != nil {
		return false
	}
	return v.VerifySignature(bytes.NewReader(sig), nil, options.WithDigest(digest)) == nil
}

// verifyMessage checks an ASN.1 signature over msg (hashed with SHA-256).
func (s *Signer) verifyMessage(msg, sig []byte) bool {
	v, err := s.getVerifier()
	if err != nil {
		return false
	}
	return v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(msg)) == nil
}

// getVerifier returns the verifier made by ParsePublicKey, or makes one for
// a Signer built by hand.
func (s *Signer) getVerifier() (signature.Verifier, error) {
	if s.verifier != nil {
		return s.verifier, nil
	}
	return signature.LoadVerifier(s.Key, crypto.SHA256)
}
