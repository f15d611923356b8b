package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bulwark-project/bulwark/internal/fsutil"
)

// KeyFile is the token signing key's name in attestd's data directory.
const KeyFile = "token-signing.key"

// Signer signs attestation tokens with one ES256 key. Safe for concurrent
// use.
type Signer struct {
	key  *ecdsa.PrivateKey
	kid  string
	jwks []byte
	jws  jose.Signer
}

// LoadKey opens an existing token signing key (PEM). A missing file is an
// error matching os.ErrNotExist.
func LoadKey(path string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("token key %s: no PEM block", path)
	}
	k, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("token key %s: %w", path, err)
	}
	return NewSigner(k)
}

// LoadOrCreateKey opens the token signing key at path (PEM, 0600),
// creating a P-256 key from rnd (nil: crypto/rand) when absent.
func LoadOrCreateKey(path string, rnd io.Reader) (*Signer, error) {
	s, err := LoadKey(path)
	if !errors.Is(err, os.ErrNotExist) {
		return s, err
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, fmt.Errorf("generating token key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return NewSigner(k)
}

// NewSigner wraps a P-256 key. Its key id ("kid") is the key's RFC 7638
// thumbprint (SHA-256). Signatures draw their randomness from crypto/rand
// (go-jose's).
func NewSigner(k *ecdsa.PrivateKey) (*Signer, error) {
	if k == nil || k.Curve != elliptic.P256() {
		return nil, errors.New("token key: want ECDSA P-256 (ES256)")
	}
	tp, err := (&jose.JSONWebKey{Key: &k.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	set, err := jwks(&k.PublicKey, kid)
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	jws, err := jose.NewSigner(jose.SigningKey{Algorithm: Algorithm, Key: jose.JSONWebKey{Key: k, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	return &Signer{key: k, kid: kid, jwks: set, jws: jws}, nil
}

// KeyID is the JWT "kid" of the signing key.
func (s *Signer) KeyID() string { return s.kid }

// Public is the verification key.
func (s *Signer) Public() *ecdsa.PublicKey { return &s.key.PublicKey }

// Key is the signing key itself, for the other signatures attestd makes
// with it (audit checkpoints and retention seals). Never log it.
func (s *Signer) Key() crypto.Signer { return s.key }

// JWKS returns the JSON Web Key Set holding the verification key.
func (s *Signer) JWKS() []byte { return slices.Clone(s.jwks) }

// Sign returns the compact JWT for c: header {"alg":"ES256","kid":KeyID,
// "typ":"JWT"}, payload c as JSON.
func (s *Signer) Sign(c *Claims) (string, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	obj, err := s.jws.Sign(body)
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	return obj.CompactSerialize()
}
