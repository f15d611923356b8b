package enclave

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
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

// joinStore is a JoinStore that returns one join record as an attacker with
// write access to the database might leave it.
type joinStore struct {
	j     store.Join
	check []byte
}

func (s *joinStore) VaultCheck(context.Context) ([]byte, error)          { return s.check, nil }
func (s *joinStore) CreateJoin(context.Context, store.Join) error        { return nil }
func (s *joinStore) GetJoin(context.Context, string) (store.Join, error) { return s.j, nil }
func (s *joinStore) DeleteJoin(context.Context, string) error            { return nil }
func (s *joinStore) ApproveJoin(_ context.Context, _ string, w []byte, by string) (store.Join, error) {
	j := s.j
	j.State, j.Wrapped, j.ApprovedBy = store.JoinApproved, w, by
	return j, nil
}

// FuzzJoinRecord: whatever wrapped key a join record holds, FinishJoin
// refuses it (ErrJoinKey: it cannot forge HPKE to this replica's key) and
// imports nothing; whatever public key and node a pending record holds,
// ApproveJoin wraps to it or refuses it, and never panics.
func FuzzJoinRecord(f *testing.F) {
	f.Add([]byte{}, make([]byte, 32), "r2")
	f.Add(make([]byte, 80), []byte{9}, "")
	f.Add(make([]byte, 32+32+16), make([]byte, 33), "bad name")
	ctx := context.Background()
	st := openStoreF(f)
	v, err := New(ctx, &FileBackend{Dir: f.TempDir(), AllowInsecureFile: true, Logger: discard}, st, true, Options{})
	if err != nil {
		f.Fatal(err)
	}
	check, err := st.VaultCheck(ctx)
	if err != nil {
		f.Fatal(err)
	}
	b := &FileBackend{Dir: f.TempDir(), AllowInsecureFile: true, Logger: discard}
	js := &joinStore{check: check}
	j, err := StartJoin(ctx, b, js, "r2")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, wrapped, pub []byte, node string) {
		js.j = store.Join{ID: j.ID, Node: j.Node, PublicKey: j.PublicKey, State: store.JoinApproved, Wrapped: wrapped}
		if _, err := FinishJoin(ctx, b, js); !errors.Is(err, ErrJoinKey) {
			t.Fatalf("forged wrapped key: %v, want ErrJoinKey", err)
		}
		js.j = store.Join{ID: JoinID(pub), Node: node, PublicKey: pub, State: store.JoinPending}
		if _, err := v.ApproveJoin(ctx, js, JoinID(pub), "alice"); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("approve of a join record with public key %x, node %q: %v", pub, node, err)
		}
	})
}

func openStoreF(f *testing.F) store.Store {
	st, err := embedded.Open(context.Background(), f.TempDir(), store.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	return st
}
