package attestd

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPKIBootstrap(t *testing.T) {
	dir := t.TempDir()
	p, created, err := LoadOrCreatePKI(dir, nil, nil)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	for _, f := range []string{"ca.key"} {
		fi, err := os.Stat(filepath.Join(dir, "tls", f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi.Mode(), err)
		}
	}
	p2, created, err := LoadOrCreatePKI(dir, nil, nil)
	if err != nil || created || p2.CAFingerprint() != p.CAFingerprint() {
		t.Fatalf("reload: created=%v err=%v", created, err)
	}
	cert, err := p.ServerCertificate([]string{"attestd.example", "10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "tls", "server.key")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("server.key mode %v", fi.Mode())
	}
	leaf := cert.Leaf
	for _, name := range []string{"localhost", "attestd.example"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: p.CAPool(), DNSName: name}); err != nil {
			t.Errorf("server cert for %s: %v", name, err)
		}
	}
	for _, ip := range []string{"127.0.0.1", "::1", "10.1.2.3"} {
		found := false
		for _, have := range leaf.IPAddresses {
			found = found || have.Equal(net.ParseIP(ip))
		}
		if !found {
			t.Errorf("server cert lacks IP SAN %s", ip)
		}
	}
	// Same SANs: reused; a new SAN: reissued.
	again, _ := p.ServerCertificate([]string{"attestd.example", "10.1.2.3"})
	if !again.Leaf.Equal(leaf) {
		t.Error("server certificate reissued without need")
	}
	more, _ := p.ServerCertificate([]string{"other.example"})
	if more.Leaf.Equal(leaf) || more.Leaf.VerifyHostname("other.example") != nil {
		t.Error("server certificate not reissued for a new SAN")
	}

	certPath, keyPath, err := p.IssueClientCert("alice", AdminRoleURI, time.Hour, filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(kp.Certificate[0])
	if !HasRole(c, AdminRoleURI) || HasRole(c, HostRoleURI) {
		t.Fatal("admin role")
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: p.CAPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "../x", ".hidden", strings.Repeat("a", 65), "a b"} {
		if _, _, err := p.IssueClientCert(bad, AdminRoleURI, time.Hour, filepath.Join(dir, "out")); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}

func TestTokens(t *testing.T) {
	dir := t.TempDir()
	s, err := LoadOrCreateTokenKey(filepath.Join(dir, "k"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := LoadOrCreateTokenKey(filepath.Join(dir, "k"), nil)
	if err != nil || s2.KeyID() != s.KeyID() {
		t.Fatal("token key not reloaded")
	}
	now := time.Unix(1_800_000_000, 0)
	tok, err := s.Sign(&Claims{Issuer: TokenIssuer, ID: "att-1", Verdict: "allow", IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := VerifyToken(tok, s.Public(), now); err != nil || c.ID != "att-1" {
		t.Fatalf("verify: %v", err)
	}
	parts := strings.Split(tok, ".")
	body, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := strings.Replace(string(body), `"allow"`, `"deny!"`, 1)
	noneHdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	other, _ := LoadOrCreateTokenKey(filepath.Join(dir, "other"), nil)
	cases := map[string]struct {
		tok string
		now time.Time
	}{
		"tampered payload": {parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(tampered)) + "." + parts[2], now},
		"alg none":         {noneHdr + "." + parts[1] + ".", now},
		"expired":          {tok, now.Add(time.Minute)},
		"not a JWT":        {"abc", now},
		"truncated sig":    {tok[:len(tok)-4], now},
		"huge":             {strings.Repeat("a", maxTokenSize+1), now},
	}
	for name, tc := range cases {
		if _, err := VerifyToken(tc.tok, s.Public(), tc.now); !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := VerifyToken(tok, other.Public(), now); !errors.Is(err, ErrBadToken) {
		t.Error("verifies with another key")
	}
	var jwks struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(s.JWKS(), &jwks); err != nil || len(jwks.Keys) != 1 || jwks.Keys[0]["kid"] != s.KeyID() || jwks.Keys[0]["alg"] != "ES256" {
		t.Fatalf("jwks: %s", s.JWKS())
	}
}
