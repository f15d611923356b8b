package attestd

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/bulwark-project/bulwark/internal/fsutil"
)

// Claims are what an attestation token says. The token is a JWT (RFC 7519)
// signed with ES256; verify it offline with the keys from GetSigningKeys or
// /.well-known/jwks.json.
type Claims struct {
	Issuer        string   `json:"iss"`
	ID            string   `json:"jti"` // the attestation id
	Node          string   `json:"node"`
	Sandbox       string   `json:"sandbox"`
	Policy        string   `json:"policy,omitempty"`
	Digests       Digests  `json:"digests"`
	GuestKeyHash  string   `json:"guest_key_hash,omitempty"` // "sha256:<hex>" of the guest public key
	Verdict       string   `json:"verdict"`                  // "allow" or "deny"
	Reasons       []string `json:"reasons,omitempty"`
	IssuedAt      int64    `json:"iat"`
	ExpiresAt     int64    `json:"exp"`
	LaunchPCR     uint32   `json:"launch_pcr"`
	LaunchPCRHash string   `json:"launch_pcr_value,omitempty"` // hex
}

// Digests are the measured artifacts of the judged launch.
type Digests struct {
	Kernel      string `json:"kernel,omitempty"`
	Initrd      string `json:"initrd,omitempty"`
	Cmdline     string `json:"cmdline,omitempty"`
	Image       string `json:"image,omitempty"`
	ImageConfig string `json:"image_config,omitempty"`
}

// TokenIssuer is the "iss" of attestd's tokens.
const TokenIssuer = "bulwark-attestd"

// ErrBadToken is returned for a token that does not verify, for any reason.
var ErrBadToken = errors.New("attestation token does not verify")

// TokenSigner signs attestation tokens with one ES256 key. Safe for
// concurrent use.
type TokenSigner struct {
	key  *ecdsa.PrivateKey
	kid  string
	jwk  map[string]string
	rand io.Reader
}

// TokenKeyFile is the token signing key's name in the data directory.
const TokenKeyFile = "token-signing.key"

// LoadTokenKey opens an existing token signing key (PEM).
func LoadTokenKey(path string) (*TokenSigner, error) {
	return loadTokenKey(path, nil)
}

// loadTokenKey reads and parses the key at path; a missing file is an
// error matching os.ErrNotExist.
func loadTokenKey(path string, rnd io.Reader) (*TokenSigner, error) {
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
	return NewTokenSigner(k, rnd)
}

// LoadOrCreateTokenKey opens the token signing key at path (PEM, 0600),
// creating it when absent.
func LoadOrCreateTokenKey(path string, rnd io.Reader) (*TokenSigner, error) {
	if rnd == nil {
		rnd = defaultRand
	}
	s, err := loadTokenKey(path, rnd)
	if !errors.Is(err, os.ErrNotExist) {
		return s, err
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
	return NewTokenSigner(k, rnd)
}

// NewTokenSigner wraps a P-256 key.
func NewTokenSigner(k *ecdsa.PrivateKey, rnd io.Reader) (*TokenSigner, error) {
	if k.Curve != elliptic.P256() {
		return nil, errors.New("token key: want ECDSA P-256 (ES256)")
	}
	if rnd == nil {
		rnd = defaultRand
	}
	ecdh, err := k.PublicKey.ECDH()
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	raw := ecdh.Bytes() // 0x04 || X || Y
	x := base64.RawURLEncoding.EncodeToString(raw[1:33])
	y := base64.RawURLEncoding.EncodeToString(raw[33:65])
	// RFC 7638 thumbprint as the key id.
	tp := sha256.Sum256([]byte(`{"crv":"P-256","kty":"EC","x":"` + x + `","y":"` + y + `"}`))
	kid := base64.RawURLEncoding.EncodeToString(tp[:])
	return &TokenSigner{key: k, kid: kid, rand: rnd, jwk: map[string]string{
		"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig",
	}}, nil
}

// KeyID is the JWT "kid" of the signing key.
func (s *TokenSigner) KeyID() string { return s.kid }

// Public is the verification key.
func (s *TokenSigner) Public() *ecdsa.PublicKey { return &s.key.PublicKey }

// JWKS returns the JSON Web Key Set holding the verification key.
func (s *TokenSigner) JWKS() []byte {
	b, _ := json.Marshal(map[string]any{"keys": []map[string]string{s.jwk}})
	return b
}

// Sign returns the compact JWT for c.
func (s *TokenSigner) Sign(c *Claims) (string, error) {
	hdr, _ := json.Marshal(map[string]string{"alg": "ES256", "typ": "JWT", "kid": s.kid})
	body, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signing := base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(body)
	h := sha256.Sum256([]byte(signing))
	r, ss, err := ecdsa.Sign(s.rand, s.key, h[:])
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// maxTokenSize bounds the tokens VerifyToken accepts.
const maxTokenSize = 16 << 10

// VerifyToken checks a token's ES256 signature with pub, its issuer and its
// validity at now, and returns its claims. Any failure is ErrBadToken
// (wrapped with the reason).
func VerifyToken(token string, pub crypto.PublicKey, now time.Time) (*Claims, error) {
	ek, ok := pub.(*ecdsa.PublicKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: verification key is not P-256", ErrBadToken)
	}
	if len(token) > maxTokenSize {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrBadToken, maxTokenSize)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: not a compact JWT", ErrBadToken)
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrBadToken, err)
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil || hdr.Alg != "ES256" {
		return nil, fmt.Errorf("%w: header alg must be ES256", ErrBadToken)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return nil, fmt.Errorf("%w: malformed signature", ErrBadToken)
	}
	h := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(ek, h[:], r, s) {
		return nil, fmt.Errorf("%w: bad signature", ErrBadToken)
	}
	body, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrBadToken, err)
	}
	var c Claims
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrBadToken, err)
	}
	if c.Issuer != TokenIssuer {
		return nil, fmt.Errorf("%w: issuer %q", ErrBadToken, c.Issuer)
	}
	if now.Unix() >= c.ExpiresAt {
		return nil, fmt.Errorf("%w: expired at %s", ErrBadToken, time.Unix(c.ExpiresAt, 0).UTC().Format(time.RFC3339))
	}
	if c.IssuedAt > now.Unix()+60 {
		return nil, fmt.Errorf("%w: issued in the future", ErrBadToken)
	}
	return &c, nil
}
