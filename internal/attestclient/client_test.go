package attestclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOptionsErrors(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not a certificate"), 0o600)
	cases := []struct {
		name string
		o    Options
		want string
	}{
		{"no address", Options{}, "no address"},
		{"no CA", Options{Addr: "x:1"}, "no CA certificate"},
		{"missing CA file", Options{Addr: "x:1", CAFile: filepath.Join(dir, "nope")}, "reading CA"},
		{"CA without PEM", Options{Addr: "x:1", CAFile: junk}, "no PEM certificate"},
		{"cert without key", Options{Addr: "x:1", CAPEM: ca, CertFile: "c.crt"}, "both a client certificate and its key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Dial(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	if c, err := Dial(Options{Addr: "127.0.0.1:1", Insecure: true}); err != nil {
		t.Fatal(err)
	} else {
		c.Close()
	}
	cfg, err := Options{Addr: "x:1", CAPEM: ca}.TLSConfig()
	if err != nil || cfg.MinVersion != 0x0304 {
		t.Fatalf("TLS config: %v %v", cfg, err)
	}
}

// newTestCA returns a throwaway self-signed P-256 CA certificate (PEM).
func newTestCA(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
