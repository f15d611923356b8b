package attestdcmd

import (
	"bytes"
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

func TestReadAllowList(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "allow")
	id := "sha256:" + strings.Repeat("ab", 32)
	os.WriteFile(p, []byte("# hosts\n"+id+"  # rack 1\n\n"+strings.Repeat("cd", 32)+"\n"), 0o600)
	got, err := readAllowList(p)
	if err != nil || len(got) != 2 || got[0] != id {
		t.Fatalf("%v %v", got, err)
	}
	os.WriteFile(p, []byte(strings.Repeat("x", 100)+"\n"), 0o600)
	if _, err := readAllowList(p); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Fatalf("long entry: %v", err)
	}
}

func TestReadCerts(t *testing.T) {
	dir := t.TempDir()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "ek root"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	pemPath, derPath, bad := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a.der"), filepath.Join(dir, "bad")
	os.WriteFile(pemPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(derPath, der, 0o600)
	os.WriteFile(bad, []byte("-----BEGIN NOTHING-----\n"), 0o600)
	for _, p := range []string{pemPath, derPath} {
		cs, err := readCerts(p)
		if err != nil || len(cs) != 1 || !isSelfSigned(cs[0]) {
			t.Fatalf("%s: %v %v", p, cs, err)
		}
	}
	if _, err := readCerts(bad); err == nil {
		t.Fatal("no certificate accepted")
	}
}

func TestNewLogger(t *testing.T) {
	var b bytes.Buffer
	l, err := newLogger(&b, "json", "warn")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown")
	if strings.Contains(b.String(), "hidden") || !strings.Contains(b.String(), `"msg":"shown"`) {
		t.Fatalf("log: %s", b.String())
	}
	if _, err := newLogger(&b, "xml", "info"); err == nil {
		t.Fatal("bad format accepted")
	}
	if _, err := newLogger(&b, "text", "loud"); err == nil {
		t.Fatal("bad level accepted")
	}
}
