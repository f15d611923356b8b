// Package backendtest is the conformance suite every vault backend
// (enclave.Backend: tpm, sgx, file, or a third party's) must pass: Init
// once, Open the same key again after a restart, never the key in clear on
// disk (but for the file backend, whose point that is), and a vault written
// before a restart opens after it.
package backendtest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bulwark-project/bulwark/enclave"
	"github.com/bulwark-project/bulwark/enclave/wrap"
)

// Run runs the suite. newBackend returns a backend over dir; calling it
// twice with one dir models a restart of attestd. newStore returns an
// empty store for the vault the suite writes through the backend's key;
// the caller closes it (t.Cleanup).
func Run(t *testing.T, newBackend func(t *testing.T, dir string) enclave.Backend, newStore func(t *testing.T) enclave.SecretStore) {
	ctx := context.Background()
	dir := t.TempDir()
	b := newBackend(t, dir)
	if _, err := b.Open(ctx); !errors.Is(err, enclave.ErrNoMasterKey) {
		t.Fatalf("Open before Init: %v, want ErrNoMasterKey", err)
	}
	if err := b.Init(ctx); err != nil {
		t.Fatalf("Init: %v", err)
	}
	if err := b.Init(ctx); !errors.Is(err, enclave.ErrMasterKeyExists) {
		t.Fatalf("second Init: %v, want ErrMasterKeyExists", err)
	}
	k1, err := b.Open(ctx)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if len(k1) != enclave.KeySize || bytes.Equal(k1, make([]byte, enclave.KeySize)) {
		t.Fatalf("master key is %d bytes or all zero", len(k1))
	}
	// The protected key on disk is not the key in clear, except for the
	// file backend, whose whole point is that it is.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, _ := e.Info(); fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s has mode %v, want no group/other access", e.Name(), fi.Mode().Perm())
		}
		raw, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		if b.Name() != "file" && bytes.Contains(raw, k1) {
			t.Fatalf("%s backend stores the master key in clear in %s", b.Name(), e.Name())
		}
	}
	// A restart opens the same key, and a vault written before opens after.
	st := newStore(t)
	v, err := enclave.New(ctx, b, st, false, enclave.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Put(ctx, "k", []byte("value"), enclave.Meta{}); err != nil {
		t.Fatal(err)
	}
	v.Close()
	b2 := newBackend(t, dir)
	k2, err := b2.Open(ctx)
	if err != nil {
		t.Fatalf("Open after restart: %v", err)
	}
	if !bytes.Equal(k1, k2) {
		t.Fatal("Open after restart returned another key")
	}
	v2, err := enclave.New(ctx, b2, st, false, enclave.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	g, err := wrap.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.Release(ctx, []string{"k"}, g.PublicKey(), "sb"); err != nil {
		t.Fatalf("secret written before restart does not release: %v", err)
	}
}
