package signing

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/bulwark-project/bulwark/internal/fsutil"
	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
)

// PEM block types of cosign's key files.
const (
	// PrivateKeyPEMType is what cosign v2 (`cosign generate-key-pair`) and
	// this package write: PKCS#8 DER encrypted with scrypt + NaCl secretbox
	// (go-securesystemslib's "encrypted" JSON envelope).
	PrivateKeyPEMType = "ENCRYPTED SIGSTORE PRIVATE KEY"
	// LegacyPrivateKeyPEMType is what older cosign releases wrote; same content.
	LegacyPrivateKeyPEMType = "ENCRYPTED COSIGN PRIVATE KEY"
	// PublicKeyPEMType wraps a DER SubjectPublicKeyInfo.
	PublicKeyPEMType = "PUBLIC KEY"
)

// MaxKeyFileSize bounds a key file read from disk.
const MaxKeyFileSize = 64 << 10

// MinRSABits is the smallest RSA modulus accepted.
const MinRSABits = 2048

// GenerateKeyPair makes a new ECDSA P-256 key pair (cosign's default) and
// returns the private key encrypted under password in cosign's format and the
// public key PEM. An empty password is allowed (cosign allows it too): the
// key is then still in the encrypted envelope, but anyone can open it.
func GenerateKeyPair(password []byte) (privPEM, pubPEM []byte, err error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("signing: generating key: %w", err)
	}
	privPEM, err = EncryptPrivateKey(priv, password)
	if err != nil {
		return nil, nil, err
	}
	pubPEM, err = MarshalPublicKey(priv.Public())
	if err != nil {
		return nil, nil, err
	}
	return privPEM, pubPEM, nil
}

// EncryptPrivateKey encodes priv as cosign does: PKCS#8 DER, encrypted with
// password (scrypt N=2^16, r=8, p=1 + NaCl secretbox), in an
// "ENCRYPTED SIGSTORE PRIVATE KEY" PEM block.
func EncryptPrivateKey(priv crypto.Signer, password []byte) ([]byte, error) {
	if err := checkPublicKey(priv.Public()); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("signing: encoding private key: %w", err)
	}
	defer clear(der)
	if password == nil {
		password = []byte{}
	}
	enc, err := encrypted.Encrypt(der, password)
	if err != nil {
		return nil, fmt.Errorf("signing: encrypting private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: PrivateKeyPEMType, Bytes: enc}), nil
}

// ParsePrivateKey reads a private key in cosign's encrypted format (either
// PEM type), or an unencrypted PKCS#8 "PRIVATE KEY" / SEC 1 "EC PRIVATE KEY"
// block. pass is called only for encrypted keys; it may return an empty
// password. A wrong password gives ErrKeyDecrypt.
func ParsePrivateKey(pemBytes []byte, pass func() ([]byte, error)) (crypto.Signer, error) {
	if len(pemBytes) > MaxKeyFileSize {
		return nil, fmt.Errorf("signing: private key: %w: larger than %d bytes", ErrMalformedKey, MaxKeyFileSize)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("signing: private key: %w: no PEM block (expected %q, as cosign generate-key-pair writes)", ErrMalformedKey, PrivateKeyPEMType)
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case PrivateKeyPEMType, LegacyPrivateKeyPEMType:
		if pass == nil {
			return nil, fmt.Errorf("signing: private key is encrypted and no password was given")
		}
		pw, perr := pass()
		if perr != nil {
			return nil, fmt.Errorf("signing: reading key password: %w", perr)
		}
		der, derr := encrypted.Decrypt(block.Bytes, pw)
		clear(pw)
		if derr != nil {
			return nil, fmt.Errorf("signing: %w", ErrKeyDecrypt)
		}
		key, err = x509.ParsePKCS8PrivateKey(der)
		clear(der)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("signing: private key: %w: PEM type %q (expected %q)", ErrMalformedKey, block.Type, PrivateKeyPEMType)
	}
	if err != nil {
		return nil, fmt.Errorf("signing: private key: %w: %v", ErrMalformedKey, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("signing: private key: %w: %T", ErrUnsupportedKey, key)
	}
	if err := checkPublicKey(s.Public()); err != nil {
		return nil, err
	}
	return s, nil
}

// MarshalPublicKey encodes pub as a PEM "PUBLIC KEY" block (cosign.pub).
func MarshalPublicKey(pub crypto.PublicKey) ([]byte, error) {
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("signing: encoding public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: PublicKeyPEMType, Bytes: der}), nil
}

// LoadVerifier parses a PEM public key (cosign.pub) and checks that it is a
// supported signing key. The result is what VerifyBlob, VerifyDigest,
// VerifyImage and VerifyBundle take.
func LoadVerifier(pubPEM []byte) (crypto.PublicKey, error) {
	if len(pubPEM) > MaxKeyFileSize {
		return nil, fmt.Errorf("signing: public key: %w: larger than %d bytes", ErrMalformedKey, MaxKeyFileSize)
	}
	block, rest := pem.Decode(pubPEM)
	if block == nil {
		return nil, fmt.Errorf("signing: public key: %w: no PEM block (expected %q, as in cosign.pub)", ErrMalformedKey, PublicKeyPEMType)
	}
	if block.Type != PublicKeyPEMType {
		return nil, fmt.Errorf("signing: public key: %w: PEM type %q, expected %q", ErrMalformedKey, block.Type, PublicKeyPEMType)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("signing: public key: %w: trailing data after the PEM block", ErrMalformedKey)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing: public key: %w: %v", ErrMalformedKey, err)
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// LoadVerifierFile reads and parses a public key file (see LoadVerifier).
func LoadVerifierFile(path string) (crypto.PublicKey, error) {
	b, err := ReadLimited(path, MaxKeyFileSize)
	if err != nil {
		return nil, fmt.Errorf("signing: reading public key: %w", err)
	}
	pub, err := LoadVerifier(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pub, nil
}

// KeyID is the key's fingerprint: "sha256:" + hex(SHA-256(DER
// SubjectPublicKeyInfo)). It is "" for a key that cannot be encoded.
func KeyID(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// checkPublicKey accepts the keys cosign signs with by default and whose
// signature scheme over SHA-256 is unambiguous: ECDSA P-256 and RSA
// (PKCS#1 v1.5) of at least MinRSABits.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("signing: %w: ECDSA on %s (only P-256, cosign's default)", ErrUnsupportedKey, k.Curve.Params().Name)
		}
		return nil
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return fmt.Errorf("signing: %w: RSA-%d (at least %d bits)", ErrUnsupportedKey, k.N.BitLen(), MinRSABits)
		}
		return nil
	case nil:
		return fmt.Errorf("signing: %w: no key", ErrUnsupportedKey)
	default:
		return fmt.Errorf("signing: %w: %T (supported: ECDSA P-256, RSA ≥ %d)", ErrUnsupportedKey, pub, MinRSABits)
	}
}

// ReadLimited reads a whole file of at most limit bytes; larger files are an
// error rather than truncated.
func ReadLimited(path string, limit int64) ([]byte, error) {
	return fsutil.ReadFileLimit(path, limit)
}

var errClosed = errors.New("signing: signer is closed")
