// Package token is attestd's attestation token: a compact JWT signed with
// ES256 whose claims say what was attested and the verdict. attestd signs
// them (Signer); attestd's release and any relying party check them (Verify).
package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
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

// Issuer is the "iss" of attestd's tokens.
const Issuer = "bulwark-attestd"

// Algorithm is the one JWS algorithm tokens are signed with and Verify
// accepts: ECDSA P-256 with SHA-256.
const Algorithm = jose.ES256

// MaxSize bounds the tokens Verify accepts, in bytes.
const MaxSize = 16 << 10

// ClockSkew is how far in the future a token's "iat" may lie (another
// replica's clock) before Verify refuses it as not yet valid.
const ClockSkew = 60 * time.Second

// ErrInvalid is returned for a token that does not verify, for any reason.
var ErrInvalid = errors.New("attestation token does not verify")

// Verify checks, in order, that token is at most MaxSize bytes, a JWS
// compact serialization in canonical base64url whose header names ES256
// (no other algorithm, "none" included), signed by pub (an ECDSA P-256
// key), with claims issued by Issuer, not expired at now ("exp" after
// now) and not issued more than ClockSkew after now. It returns the
// claims. Every refusal wraps ErrInvalid with the reason.
func Verify(token string, pub crypto.PublicKey, now time.Time) (*Claims, error) {
	ek, ok := pub.(*ecdsa.PublicKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: verification key is not P-256", ErrInvalid)
	}
	if len(token) > MaxSize {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxSize)
	}
	if err := canonical(token); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	jws, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{Algorithm})
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, strings.TrimPrefix(err.Error(), "go-jose/go-jose: "))
	}
	var c Claims
	if err := jws.Claims(ek, &c); errors.Is(err, jose.ErrCryptoFailure) {
		return nil, fmt.Errorf("%w: bad signature", ErrInvalid)
	} else if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, strings.TrimPrefix(err.Error(), "go-jose/go-jose: "))
	}
	if c.Issuer != Issuer {
		return nil, fmt.Errorf("%w: issuer %q", ErrInvalid, c.Issuer)
	}
	if now.Unix() >= c.ExpiresAt {
		return nil, fmt.Errorf("%w: expired at %s", ErrInvalid, time.Unix(c.ExpiresAt, 0).UTC().Format(time.RFC3339))
	}
	if c.IssuedAt > now.Add(ClockSkew).Unix() {
		return nil, fmt.Errorf("%w: issued in the future", ErrInvalid)
	}
	return &c, nil
}

// canonical refuses a compact JWS that is not three parts each spelled as
// base64url encodes them. Decoding alone would let one signed token have
// many spellings (unused trailing bits, CR and LF are ignored), which go-jose
// would verify since it re-encodes what it decoded before checking the
// signature.
func canonical(token string) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return errors.New("not a compact JWT")
	}
	for i, p := range parts {
		b, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil || base64.RawURLEncoding.EncodeToString(b) != p {
			return fmt.Errorf("part %d is not canonical base64url", i+1)
		}
	}
	return nil
}

// jwks is the JSON Web Key Set of one verification key.
func jwks(pub *ecdsa.PublicKey, kid string) ([]byte, error) {
	return json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: pub, KeyID: kid, Algorithm: string(Algorithm), Use: "sig",
	}}})
}
