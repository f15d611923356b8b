package token

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"
)

// The hand-rolled JWS code attestd used before go-jose, frozen here so that
// tokens stay compatible both ways: what attestd signed before verifies
// now, and what it signs now verifies with a verifier written like the old
// one (and like any small relying party's).

func legacySign(k *ecdsa.PrivateKey, kid string, c *Claims) (string, error) {
	hdr, _ := json.Marshal(map[string]string{"alg": "ES256", "typ": "JWT", "kid": kid})
	body, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signing := base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(body)
	h := sha256.Sum256([]byte(signing))
	r, ss, err := ecdsa.Sign(rand.Reader, k, h[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

func legacyVerify(token string, ek *ecdsa.PublicKey, now time.Time) (*Claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWT")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, err
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil || hdr.Alg != "ES256" {
		return nil, errors.New("header alg must be ES256")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return nil, errors.New("malformed signature")
	}
	h := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(ek, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return nil, errors.New("bad signature")
	}
	body, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	var c Claims
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, err
	}
	if c.Issuer != Issuer || now.Unix() >= c.ExpiresAt || c.IssuedAt > now.Unix()+60 {
		return nil, errors.New("claims")
	}
	return &c, nil
}

// legacyClaims are the claims of testdata/legacy-token.jwt.
var legacyClaims = Claims{Issuer: Issuer, ID: "att-0191b4c2d3e4f5a6b7c8d9e0f1a2b3c4",
	Node: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Sandbox: "web-1", Policy: "web",
	Digests:      Digests{Kernel: "sha256:aa", Initrd: "sha256:bb", Cmdline: "sha256:cc", Image: "sha256:dd", ImageConfig: "sha256:ee"},
	GuestKeyHash: "sha256:ff", Verdict: "deny", Reasons: []string{"kernel: want <sha256:11> & got \"sha256:aa\"", "é"},
	IssuedAt: 1_800_000_000, ExpiresAt: 1_800_000_300, LaunchPCR: 13, LaunchPCRHash: "0123abcd"}

// The frozen token, key and JWKS in testdata were written by the
// hand-rolled code before it was replaced: the token verifies with Verify,
// and the key's kid and JWKS are what that code published.
func TestLegacyTokenVerifies(t *testing.T) {
	s, err := LoadKey("testdata/legacy-signing.key")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile("testdata/legacy-token.jwt")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(legacyClaims.IssuedAt, 0)
	c, err := Verify(strings.TrimSpace(string(tok)), s.Public(), now)
	if err != nil {
		t.Fatalf("the token the old code signed does not verify: %v", err)
	}
	if !equalJSON(t, c, &legacyClaims) {
		t.Fatalf("claims %+v, want %+v", c, legacyClaims)
	}
	var hdr map[string]string
	b, _ := base64.RawURLEncoding.DecodeString(strings.Split(string(tok), ".")[0])
	if err := json.Unmarshal(b, &hdr); err != nil || hdr["kid"] != s.KeyID() {
		t.Fatalf("kid %q, the old code's %q (%v)", s.KeyID(), hdr["kid"], err)
	}
	old, err := os.ReadFile("testdata/legacy-jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	var want, got any
	if err := json.Unmarshal(old, &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(s.JWKS(), &got); err != nil {
		t.Fatal(err)
	}
	if !equalJSON(t, got, want) {
		t.Fatalf("JWKS %s, the old code's %s", s.JWKS(), old)
	}
	if _, err := Verify(strings.TrimSpace(string(tok)), s.Public(), time.Unix(legacyClaims.ExpiresAt, 0)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("the frozen token verifies at its expiry: %v", err)
	}
}

// Tokens cross between the old code and the new one, both ways, and the
// new token's header is the old one's.
func TestLegacyInterop(t *testing.T) {
	s, err := LoadOrCreateKey(t.TempDir()+"/k", nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(legacyClaims.IssuedAt+10, 0)
	oldTok, err := legacySign(s.key, s.KeyID(), &legacyClaims)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Verify(oldTok, s.Public(), now); err != nil || !equalJSON(t, c, &legacyClaims) {
		t.Fatalf("old-signed token: %+v, %v", c, err)
	}
	newTok, err := s.Sign(&legacyClaims)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := legacyVerify(newTok, s.Public(), now); err != nil || !equalJSON(t, c, &legacyClaims) {
		t.Fatalf("the old verifier refuses the new token: %+v, %v", c, err)
	}
	if o, n := strings.Split(oldTok, ".")[:2], strings.Split(newTok, ".")[:2]; o[0] != n[0] || o[1] != n[1] {
		t.Errorf("header or payload changed:\nold %s.%s\nnew %s.%s", o[0], o[1], n[0], n[1])
	}
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	x, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(x) == string(y)
}
