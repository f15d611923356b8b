package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var b64 = base64.RawURLEncoding.EncodeToString

// rawSign signs header.payload as JWS alg would with k: ECDSA as r||s
// (hashed with SHA-256 or SHA-384 by the key's size), RSA PKCS#1 v1.5
// SHA-256, or HMAC-SHA256 with a []byte secret.
func rawSign(t testing.TB, k any, header string, payload []byte) string {
	t.Helper()
	signing := b64([]byte(header)) + "." + b64(payload)
	var sig []byte
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		var h []byte
		if size == 32 {
			s := sha256.Sum256([]byte(signing))
			h = s[:]
		} else {
			s := sha512.Sum384([]byte(signing))
			h = s[:]
		}
		r, s, err := ecdsa.Sign(rand.Reader, k, h)
		if err != nil {
			t.Fatal(err)
		}
		sig = make([]byte, 2*size)
		r.FillBytes(sig[:size])
		s.FillBytes(sig[size:])
	case *rsa.PrivateKey:
		h := sha256.Sum256([]byte(signing))
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, h[:]); err != nil {
			t.Fatal(err)
		}
	case []byte:
		m := hmac.New(sha256.New, k)
		m.Write([]byte(signing))
		sig = m.Sum(nil)
	default:
		t.Fatalf("key %T", k)
	}
	return signing + "." + b64(sig)
}

func TestSignVerify(t *testing.T) {
	dir := t.TempDir()
	s, err := LoadOrCreateKey(filepath.Join(dir, "k"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "k")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	s2, err := LoadOrCreateKey(filepath.Join(dir, "k"), nil)
	if err != nil || s2.KeyID() != s.KeyID() {
		t.Fatal("token key not reloaded")
	}
	now := time.Unix(1_800_000_000, 0)
	tok, err := s.Sign(&Claims{Issuer: Issuer, ID: "att-1", Verdict: "allow", IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Verify(tok, s.Public(), now); err != nil || c.ID != "att-1" {
		t.Fatalf("verify: %v", err)
	}
	var hdr map[string]string
	b, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err := json.Unmarshal(b, &hdr); err != nil || len(hdr) != 3 || hdr["alg"] != "ES256" || hdr["typ"] != "JWT" || hdr["kid"] != s.KeyID() {
		t.Fatalf("header %s", b)
	}
	var jwks struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(s.JWKS(), &jwks); err != nil || len(jwks.Keys) != 1 || jwks.Keys[0]["kid"] != s.KeyID() ||
		jwks.Keys[0]["alg"] != "ES256" || jwks.Keys[0]["use"] != "sig" || jwks.Keys[0]["crv"] != "P-256" {
		t.Fatalf("jwks: %s", s.JWKS())
	}
	if _, err := LoadKey(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("absent key: %v", err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := NewSigner(p384); err == nil {
		t.Fatal("a P-384 signing key was accepted")
	}
}

// Verify accepts only an ES256 token signed by the key, of attestd's
// issuer, within its validity; everything else is ErrInvalid.
func TestVerify(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	s, err := NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	claims := func(f func(*Claims)) []byte {
		c := Claims{Issuer: Issuer, ID: "att-1", Verdict: "allow", IssuedAt: now.Unix(), ExpiresAt: now.Unix() + 300}
		if f != nil {
			f(&c)
		}
		b, _ := json.Marshal(c)
		return b
	}
	es256 := `{"alg":"ES256","typ":"JWT"}`
	good := rawSign(t, key, es256, claims(nil))
	parts := strings.Split(good, ".")
	tampered := strings.Replace(string(claims(nil)), `"allow"`, `"deny!"`, 1)
	pub := func(k *ecdsa.PrivateKey) crypto.PublicKey { return &k.PublicKey }
	pkix, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	// A signature whose last base64url character differs only in the 4
	// unused bits: the same 64 bytes, another spelling.
	last := parts[2][len(parts[2])-1]
	alt := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", last) ^ 1

	cases := []struct {
		name string
		tok  string
		key  crypto.PublicKey
		now  time.Time
		ok   bool
	}{
		{"good", good, pub(key), now, true},
		{"signed by Signer", func() string { t, _ := s.Sign(&Claims{Issuer: Issuer, ExpiresAt: now.Unix() + 1}); return t }(), pub(key), now, true},
		{"last second", good, pub(key), now.Add(299 * time.Second), true},
		{"issued within the skew", rawSign(t, key, es256, claims(func(c *Claims) { c.IssuedAt = now.Unix() + 60 })), pub(key), now, true},

		{"another key", good, pub(other), now, false},
		{"tampered payload", parts[0] + "." + b64([]byte(tampered)) + "." + parts[2], pub(key), now, false},
		{"alg none", b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + ".", pub(key), now, false},
		{"alg none, signature kept", b64([]byte(`{"alg":"none"}`)) + "." + parts[1] + "." + parts[2], pub(key), now, false},
		{"HS256 keyed with the public key", rawSign(t, pkix, `{"alg":"HS256","typ":"JWT"}`, claims(nil)), pub(key), now, false},
		{"ES384 with a P-384 key", rawSign(t, p384, `{"alg":"ES384"}`, claims(nil)), pub(key), now, false},
		{"ES384 verified with the P-384 key", rawSign(t, p384, `{"alg":"ES384"}`, claims(nil)), pub(p384), now, false},
		{"ES256 header, P-384 signature", rawSign(t, p384, es256, claims(nil)), pub(key), now, false},
		{"RS256", rawSign(t, rsaKey, `{"alg":"RS256"}`, claims(nil)), &rsaKey.PublicKey, now, false},
		{"RSA verification key", good, &rsaKey.PublicKey, now, false},
		{"nil verification key", good, nil, now, false},
		{"alg lower case", rawSign(t, key, `{"alg":"es256"}`, claims(nil)), pub(key), now, false},
		{"no alg", rawSign(t, key, `{"typ":"JWT"}`, claims(nil)), pub(key), now, false},
		{"unknown critical header", rawSign(t, key, `{"alg":"ES256","crit":["exp"],"exp":1}`, claims(nil)), pub(key), now, false},
		{"header not JSON", rawSign(t, key, `ES256`, claims(nil)), pub(key), now, false},
		{"payload not JSON", rawSign(t, key, es256, []byte("allow")), pub(key), now, false},
		{"expired", good, pub(key), now.Add(300 * time.Second), false},
		{"no exp", rawSign(t, key, es256, claims(func(c *Claims) { c.ExpiresAt = 0 })), pub(key), now, false},
		{"issued in the future", rawSign(t, key, es256, claims(func(c *Claims) { c.IssuedAt = now.Unix() + 61 })), pub(key), now, false},
		{"another issuer", rawSign(t, key, es256, claims(func(c *Claims) { c.Issuer = "evil" })), pub(key), now, false},
		{"issuer in another case", rawSign(t, key, es256, []byte(strings.Replace(string(claims(nil)), `"iss"`, `"ISS"`, 1))), pub(key), now, false},
		{"not a JWT", "abc", pub(key), now, false},
		{"four parts", good + ".x", pub(key), now, false},
		{"empty", "", pub(key), now, false},
		{"JSON serialization", `{"protected":"` + parts[0] + `","payload":"` + parts[1] + `","signature":"` + parts[2] + `"}`, pub(key), now, false},
		{"truncated signature", good[:len(good)-4], pub(key), now, false},
		{"signature respelled", good[:len(good)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[alt]), pub(key), now, false},
		{"newline in the header", parts[0][:4] + "\n" + parts[0][4:] + "." + parts[1] + "." + parts[2], pub(key), now, false},
		{"padded", parts[0] + "." + parts[1] + "." + parts[2] + "==", pub(key), now, false},
		{"huge", strings.Repeat("a", MaxSize+1), pub(key), now, false},
	}
	// The reason each refusal gives (the caller sees it after "token: ").
	why := map[string]string{
		"another key": "bad signature", "tampered payload": "bad signature", "alg none": `algorithm "none"`,
		"HS256 keyed with the public key": `algorithm "HS256"`, "ES384 with a P-384 key": `algorithm "ES384"`,
		"ES384 verified with the P-384 key": "not P-256", "RSA verification key": "not P-256",
		"expired": "expired at 2027-01-15T08:05:00Z", "no exp": "expired at 1970", "issued in the future": "issued in the future",
		"another issuer": `issuer "evil"`, "issuer in another case": `issuer ""`, "payload not JSON": "invalid character", "unknown critical header": "critical header",
		"ES256 header, P-384 signature": "bad signature",
		"not a JWT":                     "not a compact JWT", "signature respelled": "part 3 is not canonical", "newline in the header": "part 1 is not canonical",
		"huge": "longer than 16384 bytes",
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Verify(tc.tok, tc.key, tc.now)
			if tc.ok {
				if err != nil || c.Issuer != Issuer {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), why[tc.name]) {
				t.Fatalf("got %+v, %v; want ErrInvalid: ...%s...", c, err, why[tc.name])
			}
			if testing.Verbose() {
				t.Log(err)
			}
		})
	}
}

// A validly signed token is accepted up to MaxSize bytes and refused
// beyond, before any parsing.
func TestVerifySizeCap(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := NewSigner(key)
	now := time.Unix(1_800_000_000, 0)
	var prev string
	for n := MaxSize*3/4 - 400; ; n++ {
		tok, err := s.Sign(&Claims{Issuer: Issuer, ExpiresAt: now.Unix() + 1, Reasons: []string{strings.Repeat("x", n)}})
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) <= MaxSize {
			prev = tok
			continue
		}
		if prev == "" {
			t.Fatalf("first token already %d bytes", len(tok))
		}
		if _, err := Verify(prev, s.Public(), now); err != nil {
			t.Fatalf("%d bytes refused: %v", len(prev), err)
		}
		if _, err := Verify(tok, s.Public(), now); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "longer than") {
			t.Fatalf("%d bytes: %v", len(tok), err)
		}
		return
	}
}

func BenchmarkSign(b *testing.B) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := NewSigner(key)
	c := &legacyClaims
	for b.Loop() {
		if _, err := s.Sign(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := NewSigner(key)
	tok, _ := s.Sign(&legacyClaims)
	now := time.Unix(legacyClaims.IssuedAt, 0)
	for b.Loop() {
		if _, err := Verify(tok, s.Public(), now); err != nil {
			b.Fatal(err)
		}
	}
}

// A Signer is shared by all of attestd's handlers: signing from many
// goroutines at once gives tokens that each verify (run with -race).
func TestSignerConcurrent(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, _ := NewSigner(key)
	now := time.Unix(1_800_000_000, 0)
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			for j := range 20 {
				id := "att-" + string(rune('a'+i)) + string(rune('a'+j))
				tok, err := s.Sign(&Claims{Issuer: Issuer, ID: id, ExpiresAt: now.Unix() + 1})
				if err == nil {
					var c *Claims
					if c, err = Verify(tok, s.Public(), now); err == nil && c.ID != id {
						err = errors.New("claims of another token: " + c.ID)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
