package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzVerify: Verify never panics on a client-supplied token and refuses
// everything but a token the key signed, unexpired, with attestd's issuer,
// always as ErrInvalid. Mode 0 feeds the bytes as the token; mode 1 signs
// the fuzzed header and payload with the verification key, so the checks
// after the signature (header, claims, issuer, times) are fuzzed too; mode
// 2 signs them with another key, which must always be refused.
func FuzzVerify(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	signer, err := NewSigner(key)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	good, err := signer.Sign(&Claims{Issuer: Issuer, ID: "att-" + strings.Repeat("a", 32), Verdict: "allow", IssuedAt: now.Unix(), ExpiresAt: now.Unix() + 300})
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(good, ".")
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	body, _ := base64.RawURLEncoding.DecodeString(parts[1])
	f.Add(uint8(0), good, []byte(nil))
	f.Add(uint8(0), good[:len(good)-2], []byte(nil))
	f.Add(uint8(0), "a.b.c", []byte(nil))
	f.Add(uint8(1), string(hdr), body)
	f.Add(uint8(1), `{"alg":"ES256"}`, []byte(`{"iss":"bulwark-attestd","exp":1e30}`))
	f.Add(uint8(1), `{"alg":"none"}`, body)
	f.Add(uint8(1), `{"alg":"ES256","crit":["b64"],"b64":false}`, body)
	f.Add(uint8(1), `{"alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"","y":""}}`, body)
	f.Add(uint8(1), `{"alg":"ES256"}`, []byte(`{"iss":"bulwark-attestd","exp":9223372036854775807,"iat":-9223372036854775808}`))
	f.Add(uint8(2), string(hdr), body)
	f.Fuzz(func(t *testing.T, mode uint8, a string, b []byte) {
		tok := a
		switch mode % 3 {
		case 1:
			tok = rawSign(t, key, a, b)
		case 2:
			tok = rawSign(t, other, a, b)
		}
		c, err := Verify(tok, &key.PublicKey, now)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("refusal is not ErrInvalid: %v", err)
			}
			return
		}
		switch {
		case mode%3 == 2:
			t.Fatalf("accepted a token signed with another key: %q", tok)
		case mode%3 == 0 && tok != good && !strings.HasPrefix(tok, parts[0]+"."+parts[1]+"."):
			t.Fatalf("accepted a token attestd did not sign: %q", tok)
		case c.Issuer != Issuer || now.Unix() >= c.ExpiresAt || c.IssuedAt > now.Unix()+60:
			t.Fatalf("accepted claims %+v", c)
		}
	})
}
