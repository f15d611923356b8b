package enclave

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bulwark-project/bulwark/internal/store"
)

// fakeStore holds one secret record as an attacker with write access to the
// database might leave it.
type fakeStore struct{ s store.Secret }

func (f *fakeStore) PutSecret(context.Context, store.Secret, uint64) error { return nil }
func (f *fakeStore) GetSecret(context.Context, string) (store.Secret, error) {
	return f.s, nil
}
func (f *fakeStore) ListSecrets(context.Context) ([]store.SecretMeta, error) { return nil, nil }
func (f *fakeStore) DeleteSecret(context.Context, string) error              { return nil }
func (f *fakeStore) PutVaultCheck(context.Context, []byte) error             { return nil }
func (f *fakeStore) VaultCheck(context.Context) ([]byte, error) {
	return nil, store.ErrNotFound
}

// FuzzVaultCiphertext: whatever ciphertext, version and size the store
// returns, Release fails with ErrDecrypt and never panics (it cannot forge
// an AES-GCM tag).
func FuzzVaultCiphertext(f *testing.F) {
	f.Add([]byte{}, uint64(1), 0)
	f.Add(make([]byte, 28), uint64(1), 0)
	f.Add(make([]byte, 100), uint64(0), -1)
	f.Add(make([]byte, 40), ^uint64(0), 1<<30)
	ctx := context.Background()
	fs := &fakeStore{}
	v, err := New(ctx, NewFileBackend(f.TempDir(), true, nil), fs, true, Options{})
	if err != nil {
		f.Fatal(err)
	}
	pub, _ := newGuestF(f)
	f.Fuzz(func(t *testing.T, ct []byte, version uint64, size int) {
		fs.s = store.Secret{SecretMeta: store.SecretMeta{Name: "k", Version: version, Size: size}, Ciphertext: ct}
		_, err := v.Release(ctx, []string{"k"}, pub, "sb")
		if !errors.Is(err, ErrDecrypt) {
			t.Fatalf("forged ciphertext: %v, want ErrDecrypt", err)
		}
	})
}

// FuzzSGXBlob: a sealed-key file of any content never panics the sgx
// backend and never opens unless it is the real blob.
func FuzzSGXBlob(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 32})
	f.Add(append([]byte{0, 0, 0, 2, 1, 2}, make([]byte, 60)...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	dir := f.TempDir()
	b := &SGXBackend{Dir: dir, platform: &fakeEnclave{inEnclave: true, root: []byte("fuzz root key of the fake cpu")}}
	f.Fuzz(func(t *testing.T, blob []byte) {
		if err := os.WriteFile(filepath.Join(dir, SGXKeyName), blob, 0o600); err != nil {
			t.Fatal(err)
		}
		if key, err := b.Open(context.Background()); err == nil {
			t.Fatalf("arbitrary blob opened to a %d-byte key", len(key))
		}
	})
}
