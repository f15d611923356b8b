// Package wrap seals secrets to a guest's ephemeral public key with HPKE
// (RFC 9180) and opens them inside the guest. It is the only format in which a
// released secret leaves attestd: attestd wraps, the guest agent unwraps, and
// the launcher in between forwards bytes it cannot read.
//
// Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, base mode.
// The HPKE info string binds the ciphertext to the sandbox and the secret
// name, so a wrapped secret cannot be replayed into another sandbox or under
// another name.
package wrap

import (
	"crypto/ecdh"
	"crypto/hpke"
	"errors"
	"fmt"
)

// PublicKeySize is the size of an encoded guest public key (X25519).
const PublicKeySize = 32

// MaxSecretSize bounds the plaintext of one secret.
const MaxSecretSize = 1 << 20

var (
	kem  = hpke.DHKEM(ecdh.X25519())
	kdf  = hpke.HKDFSHA256()
	aead = hpke.AES256GCM()
)

// ErrOpen is returned when a wrapped secret does not open: wrong key, wrong
// sandbox or name, or tampered ciphertext. It never says which.
var ErrOpen = errors.New("wrap: secret does not open with this key")

// PrivateKey is a guest's ephemeral key pair. It never leaves the guest.
type PrivateKey struct{ k hpke.PrivateKey }

// GenerateKey creates a fresh ephemeral key pair.
func GenerateKey() (*PrivateKey, error) {
	k, err := kem.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("wrap: generating key: %w", err)
	}
	return &PrivateKey{k: k}, nil
}

// PublicKey returns the encoded public half (PublicKeySize bytes), as it is
// recorded in the launch event.
func (p *PrivateKey) PublicKey() []byte { return p.k.PublicKey().Bytes() }

func info(sandboxID, name string) []byte {
	return fmt.Appendf(nil, "bulwark secret v1\x00%s\x00%s", sandboxID, name)
}

// Seal wraps plaintext for the holder of the private key matching pub. The
// result is HPKE's encapsulated key followed by the ciphertext.
func Seal(pub []byte, sandboxID, name string, plaintext []byte) ([]byte, error) {
	if len(pub) != PublicKeySize {
		return nil, fmt.Errorf("wrap: guest public key is %d bytes, want %d", len(pub), PublicKeySize)
	}
	if len(plaintext) > MaxSecretSize {
		return nil, fmt.Errorf("wrap: secret is %d bytes, the limit is %d", len(plaintext), MaxSecretSize)
	}
	pk, err := kem.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("wrap: guest public key: %w", err)
	}
	return hpke.Seal(pk, kdf, aead, info(sandboxID, name), plaintext)
}

// Open unwraps a secret sealed by Seal for this key, sandbox and name.
func (p *PrivateKey) Open(sandboxID, name string, wrapped []byte) ([]byte, error) {
	pt, err := hpke.Open(p.k, kdf, aead, info(sandboxID, name), wrapped)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}
