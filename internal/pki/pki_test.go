package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBootstrap(t *testing.T) {
	dir := t.TempDir()
	p, created, err := LoadOrCreate(dir, nil, nil)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	for _, f := range []string{"ca.key"} {
		fi, err := os.Stat(filepath.Join(dir, "tls", f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi.Mode(), err)
		}
	}
	p2, created, err := LoadOrCreate(dir, nil, nil)
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
