package pki

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Load never creates a CA; LoadOrCreate does not replace a ca.crt
// whose key is unreadable.
func TestLoad(t *testing.T) {
	empty := t.TempDir()
	if _, err := Load(empty, nil, nil); !errors.Is(err, ErrNoCA) || !strings.Contains(err.Error(), filepath.Join(empty, "tls", "ca.crt")) {
		t.Fatalf("no CA: %v", err)
	}
	if _, err := os.Stat(filepath.Join(empty, "tls")); !os.IsNotExist(err) {
		t.Fatalf("Load created DATA/tls: %v", err)
	}
	dir := t.TempDir()
	p, _, err := LoadOrCreate(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q, err := Load(dir, nil, nil); err != nil || q.CAFingerprint() != p.CAFingerprint() {
		t.Fatalf("existing CA: %v", err)
	}
	os.Remove(filepath.Join(dir, "tls", "ca.key"))
	if _, err := Load(dir, nil, nil); err == nil || errors.Is(err, ErrNoCA) {
		t.Fatalf("CA without its key: %v", err)
	}
	if _, _, err := LoadOrCreate(dir, nil, nil); err == nil {
		t.Fatal("LoadOrCreate replaced a CA whose key is missing")
	}
}

// IssueClientCert refuses to replace NAME.crt, NAME.key or another CA's
// ca.crt unless told to, refuses the name "ca", and the CA's own directory.
func TestIssueClientCertRefusals(t *testing.T) {
	base := t.TempDir()
	p, _, err := LoadOrCreate(filepath.Join(base, "data"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := LoadOrCreate(filepath.Join(base, "other"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		certName  string
		pre       func(out string)
		overwrite bool
		outDir    string // default: a fresh directory
		want      string // "": issued
	}{
		{name: "fresh", certName: "alice"},
		{name: "existing crt", certName: "alice", pre: func(out string) { p.IssueClientCert("alice", AdminRoleURI, time.Hour, out) }, want: "alice.crt already exists"},
		{name: "existing key only", certName: "alice", pre: func(out string) {
			os.MkdirAll(out, 0o700)
			os.WriteFile(filepath.Join(out, "alice.key"), []byte("k"), 0o600)
		}, want: "alice.key already exists"},
		{name: "overwrite", certName: "alice", pre: func(out string) { p.IssueClientCert("alice", AdminRoleURI, time.Hour, out) }, overwrite: true},
		{name: "same CA's ca.crt", certName: "bob", pre: func(out string) { p.IssueClientCert("alice", AdminRoleURI, time.Hour, out) }},
		{name: "other CA's ca.crt", certName: "bob", pre: func(out string) { other.IssueClientCert("alice", AdminRoleURI, time.Hour, out) }, want: "is not this attestd's CA certificate"},
		{name: "garbage ca.crt", certName: "bob", pre: func(out string) {
			os.MkdirAll(out, 0o700)
			os.WriteFile(filepath.Join(out, "ca.crt"), []byte("x"), 0o644)
		}, want: "is not this attestd's CA certificate"},
		{name: "name ca", certName: "ca", want: "collide with the CA certificate"},
		{name: "name Ca", certName: "Ca", want: "collide"},
		{name: "out is a file", certName: "alice", pre: func(out string) { os.WriteFile(out, nil, 0o600) }, want: "is not a directory"},
		{name: "out is the CA directory", certName: "server", outDir: p.Dir, overwrite: true, want: "the CA's own directory"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := c.outDir
			if out == "" {
				out = filepath.Join(base, "out", string(rune('a'+i)))
			}
			if c.pre != nil {
				c.pre(out)
			}
			keyBefore, _ := os.ReadFile(filepath.Join(out, c.certName+".key"))
			_, keyPath, err := p.IssueClientCertWith(c.certName, AdminRoleURI, time.Hour, out, ClientCertOptions{Overwrite: c.overwrite})
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if after, _ := os.ReadFile(keyPath); keyBefore != nil && bytes.Equal(after, keyBefore) {
					t.Fatal("key not replaced")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v, want %q", err, c.want)
			}
			if after, _ := os.ReadFile(filepath.Join(out, c.certName+".key")); !bytes.Equal(after, keyBefore) {
				t.Fatal("a refused issue changed NAME.key")
			}
		})
	}
	// The server key in the CA directory is untouched.
	if _, err := p.ServerCertificate(nil); err != nil {
		t.Fatal(err)
	}
}
