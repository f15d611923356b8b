package enclave

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/enclave/wrap"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
)

func newGuest(t *testing.T) ([]byte, *wrap.PrivateKey) { return newGuestF(t) }

func newGuestF(t testing.TB) ([]byte, *wrap.PrivateKey) {
	t.Helper()
	k, err := wrap.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey(), k
}

func newVault(t *testing.T) (*Vault, store.Store) {
	t.Helper()
	ctx := context.Background()
	st, err := embedded.Open(ctx, t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	v, err := New(ctx, NewFileBackend(t.TempDir(), true, nil), st, true, Options{Now: func() time.Time { return time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v, st
}

func TestVaultRoundTrip(t *testing.T) {
	ctx := context.Background()
	v, st := newVault(t)
	secrets := map[string][]byte{
		"db-password": []byte("hunter2-but-longer"),
		"empty":       {},
		"max":         bytes.Repeat([]byte{0xa5}, MaxSecretSize),
	}
	for name, val := range secrets {
		m, err := v.Put(ctx, name, val, Meta{Description: "the " + name})
		if err != nil {
			t.Fatalf("Put %s: %v", name, err)
		}
		if m.Version != 1 || m.Size != len(val) || m.Description != "the "+name {
			t.Fatalf("Put %s meta = %+v", name, m)
		}
		raw, err := st.GetSecret(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if len(val) > 4 && bytes.Contains(raw.Ciphertext, val[:len(val)/2]) {
			t.Fatalf("%s stored in clear", name)
		}
	}
	pub, priv := newGuest(t)
	names := []string{"db-password", "empty", "max"}
	ws, err := v.Release(ctx, names, pub, "sandbox-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 3 {
		t.Fatalf("released %d secrets, want 3", len(ws))
	}
	for i, w := range ws {
		if w.Name != names[i] || w.Version != 1 {
			t.Fatalf("wrapped %d = %s v%d", i, w.Name, w.Version)
		}
		pt, err := priv.Open("sandbox-1", w.Name, w.Sealed)
		if err != nil {
			t.Fatalf("guest cannot open %s: %v", w.Name, err)
		}
		if !bytes.Equal(pt, secrets[w.Name]) {
			t.Fatalf("%s opened to other bytes", w.Name)
		}
		// Only the matching guest key, sandbox and name open it.
		_, other := newGuest(t)
		if _, err := other.Open("sandbox-1", w.Name, w.Sealed); !errors.Is(err, wrap.ErrOpen) {
			t.Fatalf("another guest key opened %s: %v", w.Name, err)
		}
		if _, err := priv.Open("sandbox-2", w.Name, w.Sealed); !errors.Is(err, wrap.ErrOpen) {
			t.Fatalf("%s opened for another sandbox: %v", w.Name, err)
		}
		if _, err := priv.Open("sandbox-1", w.Name+"x", w.Sealed); !errors.Is(err, wrap.ErrOpen) {
			t.Fatalf("%s opened under another name: %v", w.Name, err)
		}
	}
	// Update: version 2, created kept.
	m, err := v.Put(ctx, "db-password", []byte("new"), Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != 2 || m.Size != 3 {
		t.Fatalf("update meta = %+v", m)
	}
	ws, err = v.Release(ctx, []string{"db-password"}, pub, "sandbox-1")
	if err != nil {
		t.Fatal(err)
	}
	if pt, _ := priv.Open("sandbox-1", "db-password", ws[0].Sealed); string(pt) != "new" || ws[0].Version != 2 {
		t.Fatalf("after update released %q v%d", pt, ws[0].Version)
	}
	if err := v.Delete(ctx, "empty"); err != nil {
		t.Fatal(err)
	}
	if err := v.Delete(ctx, "empty"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	if _, err := v.Release(ctx, []string{"empty"}, pub, "sandbox-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("release of a deleted secret: %v", err)
	}
}

func TestVaultListShowsNoPlaintext(t *testing.T) {
	ctx := context.Background()
	v, _ := newVault(t)
	val := []byte("correct horse battery staple")
	if _, err := v.Put(ctx, "pw", val, Meta{Description: "a password"}); err != nil {
		t.Fatal(err)
	}
	list, err := v.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "pw" || list[0].Size != len(val) || list[0].Description != "a password" || list[0].CreatedAt.IsZero() {
		t.Fatalf("List = %+v", list)
	}
	out, _ := json.Marshal(list)
	if bytes.Contains(out, val) || strings.Contains(fmt.Sprintf("%+v", list), string(val)) {
		t.Fatal("List exposes the plaintext")
	}
}

func TestVaultRejectsSwapsAndTampering(t *testing.T) {
	ctx := context.Background()
	v, st := newVault(t)
	if _, err := v.Put(ctx, "a", []byte("secret-a"), Meta{}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Put(ctx, "b", []byte("secret-b"), Meta{}); err != nil {
		t.Fatal(err)
	}
	pub, _ := newGuest(t)
	ra, _ := st.GetSecret(ctx, "a")
	rb, _ := st.GetSecret(ctx, "b")

	// Move a's ciphertext under b's name (an attacker with store access).
	swapped := rb
	swapped.Version, swapped.Ciphertext = 2, ra.Ciphertext
	if err := st.PutSecret(ctx, swapped, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Release(ctx, []string{"b"}, pub, "s"); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("a's ciphertext under b's name: %v, want ErrDecrypt", err)
	}
	// Roll a back to an old version under a new version number.
	if _, err := v.Put(ctx, "a", []byte("secret-a2"), Meta{}); err != nil {
		t.Fatal(err)
	}
	old := ra
	old.Version = 3
	if err := st.PutSecret(ctx, old, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Release(ctx, []string{"a"}, pub, "s"); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("version-1 ciphertext relabelled as version 3: %v, want ErrDecrypt", err)
	}
	// Flip a bit anywhere.
	if _, err := v.Put(ctx, "c", []byte("secret-c"), Meta{}); err != nil {
		t.Fatal(err)
	}
	rc, _ := st.GetSecret(ctx, "c")
	for _, i := range []int{0, 12, len(rc.Ciphertext) - 1} {
		bad := rc
		bad.Version = rc.Version + 1
		bad.Ciphertext = bytes.Clone(rc.Ciphertext)
		bad.Ciphertext[i] ^= 0x40
		// Keep the AAD right (name, version) so only the bit flip fails.
		if err := st.PutSecret(ctx, bad, rc.Version); err != nil {
			t.Fatal(err)
		}
		rc = bad
		if _, err := v.Release(ctx, []string{"c"}, pub, "s"); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("bit %d flipped: %v, want ErrDecrypt", i, err)
		}
	}
	// All or nothing: one bad secret fails the release of good ones.
	if _, err := v.Put(ctx, "d", []byte("secret-d"), Meta{}); err != nil {
		t.Fatal(err)
	}
	if ws, err := v.Release(ctx, []string{"d", "c"}, pub, "s"); err == nil || ws != nil {
		t.Fatalf("release with one tampered secret returned %d secrets, err %v", len(ws), err)
	}
	// Another master key cannot open what this one sealed.
	other := NewFileBackend(t.TempDir(), true, nil)
	if err := other.Init(ctx); err != nil {
		t.Fatal(err)
	}
	// New refuses it at once (the store's key-check value does not open)...
	if _, err := New(ctx, other, st, false, Options{}); !errors.Is(err, ErrWrongMasterKey) {
		t.Fatalf("New with another master key: %v, want ErrWrongMasterKey", err)
	}
	// ...and were it let through, no secret would open either.
	key, err := other.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := openedVault("file", key, st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	if _, err := v2.Release(ctx, []string{"d"}, pub, "s"); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("other master key: %v, want ErrDecrypt", err)
	}
}

func TestVaultInputs(t *testing.T) {
	ctx := context.Background()
	v, _ := newVault(t)
	pub, _ := newGuest(t)
	if _, err := v.Put(ctx, "ok", []byte("x"), Meta{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"over limit", func() error { _, err := v.Put(ctx, "big", make([]byte, MaxSecretSize+1), Meta{}); return err }()},
		{"empty name", func() error { _, err := v.Put(ctx, "", []byte("x"), Meta{}); return err }()},
		{"path name", func() error { _, err := v.Put(ctx, "../etc/passwd", []byte("x"), Meta{}); return err }()},
		{"dot name", func() error { _, err := v.Put(ctx, ".hidden", []byte("x"), Meta{}); return err }()},
		{"long name", func() error { _, err := v.Put(ctx, strings.Repeat("a", 129), []byte("x"), Meta{}); return err }()},
		{"long description", func() error {
			_, err := v.Put(ctx, "d", []byte("x"), Meta{Description: strings.Repeat("a", 1025)})
			return err
		}()},
		{"no names", func() error { _, err := v.Release(ctx, nil, pub, "s"); return err }()},
		{"too many names", func() error {
			_, err := v.Release(ctx, make([]string, MaxReleaseNames+1), pub, "s")
			return err
		}()},
		{"repeated name", func() error { _, err := v.Release(ctx, []string{"ok", "ok"}, pub, "s"); return err }()},
		{"bad name", func() error { _, err := v.Release(ctx, []string{"a/b"}, pub, "s"); return err }()},
		{"short key", func() error { _, err := v.Release(ctx, []string{"ok"}, pub[:31], "s"); return err }()},
		{"no sandbox", func() error { _, err := v.Release(ctx, []string{"ok"}, pub, ""); return err }()},
	} {
		if !errors.Is(tc.err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.name, tc.err)
		}
	}
	// An invalid X25519 point is refused by wrap.
	if _, err := v.Release(ctx, []string{"ok"}, make([]byte, 32), "s"); err == nil {
		t.Error("release to the all-zero X25519 key succeeded")
	}
	v.Close()
	if _, err := v.Release(ctx, []string{"ok"}, pub, "s"); err == nil {
		t.Error("release after Close succeeded")
	}
	if _, err := v.Put(ctx, "ok2", []byte("x"), Meta{}); err == nil {
		t.Error("put after Close succeeded")
	}
}

func TestVaultConcurrentPut(t *testing.T) {
	ctx := context.Background()
	v, _ := newVault(t)
	if _, err := v.Put(ctx, "k", []byte("v0"), Meta{}); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for i := range 8 {
		go func() { _, err := v.Put(ctx, "k", fmt.Appendf(nil, "v%d", i+1), Meta{}); errs <- err }()
	}
	var ok, conflict int
	for range 8 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, store.ErrConflict):
			conflict++
		default:
			t.Fatal(err)
		}
	}
	if ok == 0 || ok+conflict != 8 {
		t.Fatalf("%d puts succeeded, %d conflicted", ok, conflict)
	}
	list, _ := v.List(ctx)
	if list[0].Version != uint64(1+ok) {
		t.Fatalf("version %d after %d successful updates", list[0].Version, ok)
	}
}

// TestVaultRefusesNewKeyOverSecrets: losing the key file must not lead to a
// fresh key silently orphaning every stored secret.
func TestVaultRefusesNewKeyOverSecrets(t *testing.T) {
	ctx := context.Background()
	v, st := newVault(t)
	if _, err := v.Put(ctx, "k", []byte("v"), Meta{}); err != nil {
		t.Fatal(err)
	}
	_, err := New(ctx, NewFileBackend(t.TempDir(), true, nil), st, true, Options{})
	if !errors.Is(err, ErrNoMasterKey) || !strings.Contains(err.Error(), "refusing to create a new key") {
		t.Fatalf("new master key over existing secrets: %v", err)
	}
}
