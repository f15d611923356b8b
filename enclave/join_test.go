package enclave

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
)

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := embedded.Open(context.Background(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func fileBackend(t *testing.T) *FileBackend {
	return &FileBackend{Dir: t.TempDir(), AllowInsecureFile: true, Logger: discard}
}

func initialised(t *testing.T) *FileBackend {
	t.Helper()
	b := fileBackend(t)
	if err := b.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVaultRefusesKeyThatDoesNotOpenStore: a replica whose master key does
// not open the store's vault is refused when the vault opens — not at its
// first release, as before key-check values, when such a replica started
// silently and every release failed "wrong master key".
func TestVaultRefusesKeyThatDoesNotOpenStore(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T) SecretStore // a store holding replica 1's vault
		second func(t *testing.T) Backend
		create bool
		want   error
	}{
		{"own key, store has the check value", storeWithVault(false), func(t *testing.T) Backend { return initialised(t) }, true, ErrWrongMasterKey},
		{"own key, store has secrets", storeWithVault(true), func(t *testing.T) Backend { return initialised(t) }, true, ErrWrongMasterKey},
		{"no key, empty vault in the store", storeWithVault(false), func(t *testing.T) Backend { return fileBackend(t) }, true, ErrNotJoined},
		{"no key, secrets in the store", storeWithVault(true), func(t *testing.T) Backend { return fileBackend(t) }, true, ErrNotJoined},
		{"own key, store from before check values", legacyStore, func(t *testing.T) Backend { return initialised(t) }, true, ErrWrongMasterKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.setup(t)
			_, err := New(ctx, tc.second(t), st, tc.create, Options{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("second replica's vault: %v, want %v", err, tc.want)
			}
		})
	}
}

// storeWithVault returns a setup: replica 1's vault opened over a fresh
// store (writing its check value), with one secret if withSecret.
func storeWithVault(withSecret bool) func(t *testing.T) SecretStore {
	return func(t *testing.T) SecretStore {
		st := openStore(t)
		v, err := New(context.Background(), initialised(t), st, false, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		if withSecret {
			if _, err := v.Put(context.Background(), "k", []byte("v"), Meta{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := st.VaultCheck(context.Background()); err != nil {
			t.Fatalf("no check value stored when the vault opened: %v", err)
		}
		return st
	}
}

// legacyStore holds a secret sealed under some key but no check value, as
// a store written before check values existed.
func legacyStore(t *testing.T) SecretStore {
	ctx := context.Background()
	st := storeWithVault(true)(t)
	sec, err := st.(store.Store).GetSecret(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	old := openStore(t)
	if err := old.PutSecret(ctx, sec, 0); err != nil {
		t.Fatal(err)
	}
	return old
}

// TestVaultCheckStoredOnce: the right key over a store from before check
// values opens and stores one; two replicas with different keys starting on
// one fresh store at once: exactly one opens.
func TestVaultCheckStoredOnce(t *testing.T) {
	ctx := context.Background()
	st := storeWithVault(true)(t).(store.Store)
	first, _ := st.VaultCheck(ctx)
	fresh := openStore(t)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		oks  int
		errs []error
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := New(ctx, initialised(t), fresh, false, Options{})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				oks++
				v.Close()
				return
			}
			errs = append(errs, err)
		}()
	}
	wg.Wait()
	if oks != 1 {
		t.Fatalf("%d vaults with different keys opened one fresh store, want exactly 1 (%v)", oks, errs)
	}
	for _, err := range errs {
		if !errors.Is(err, ErrWrongMasterKey) {
			t.Fatalf("losing replica: %v, want ErrWrongMasterKey", err)
		}
	}
	if again, _ := st.VaultCheck(ctx); !bytes.Equal(again, first) {
		t.Fatal("the check value changed")
	}
}

var discard = newDiscard()

// TestJoin runs the join protocol between file backends (the tpm backend
// runs it in TestJoinTPMBackend and, on two swtpms, in attestd's
// TestBinaryReplicasJoin).
func TestJoin(t *testing.T) {
	testJoin(t, func(t *testing.T) Joiner { return fileBackend(t) })
}

func TestJoinTPMBackend(t *testing.T) {
	tp := openSim(t)
	testJoin(t, func(t *testing.T) Joiner { return NewTPMBackend(t.TempDir(), tp, nil) })
}

func testJoin(t *testing.T, newJoiner func(t *testing.T) Joiner) {
	ctx := context.Background()
	st := openStore(t)
	b := newJoiner(t)
	if _, err := StartJoin(ctx, b, st, "replica-2"); !errors.Is(err, ErrNothingToJoin) {
		t.Fatalf("join of a store without a vault: %v, want ErrNothingToJoin", err)
	}
	a, err := New(ctx, initialised(t), st, false, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Put(ctx, "db", []byte("hunter2"), Meta{}); err != nil {
		t.Fatal(err)
	}
	if _, err := StartJoin(ctx, b, st, "bad name!"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad node name: %v", err)
	}
	j, err := StartJoin(ctx, b, st, "replica-2")
	if err != nil {
		t.Fatal(err)
	}
	if j.State != store.JoinPending || j.ID != JoinID(j.PublicKey) || !ValidJoinID(j.ID) || j.Node != "replica-2" {
		t.Fatalf("join request %+v", j)
	}
	if again, err := StartJoin(ctx, b, st, "replica-2"); err != nil || again.ID != j.ID {
		t.Fatalf("StartJoin again: %v, id %s want %s", err, again.ID, j.ID)
	}

	// Not approved: it cannot finish, and its vault does not open.
	if _, err := FinishJoin(ctx, b, st); !errors.Is(err, ErrJoinPending) {
		t.Fatalf("finish before approval: %v, want ErrJoinPending", err)
	}
	if _, err := New(ctx, b, st, true, Options{}); !errors.Is(err, ErrNotJoined) {
		t.Fatalf("unapproved replica's vault: %v, want ErrNotJoined", err)
	}

	// Approval checks the request.
	if _, err := a.ApproveJoin(ctx, st, "nope", "alice"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("approve a malformed id: %v", err)
	}
	forged := store.Join{ID: JoinID([]byte("another key")), Node: "evil", PublicKey: j.PublicKey}
	if err := st.CreateJoin(ctx, forged); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ApproveJoin(ctx, st, forged.ID, "alice"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("approve a request whose id is not its key's fingerprint: %v, want ErrInvalid", err)
	}
	// A third replica's request, to check that B's wrapped key opens for B only.
	c := newJoiner(t)
	jc, err := StartJoin(ctx, c, st, "replica-3")
	if err != nil {
		t.Fatal(err)
	}
	approved, err := a.ApproveJoin(ctx, st, j.ID, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if approved.State != store.JoinApproved || approved.ApprovedBy != "alice" || len(approved.Wrapped) == 0 {
		t.Fatalf("approved: %+v", approved)
	}
	if _, err := a.ApproveJoin(ctx, st, j.ID, "alice"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("approve twice: %v, want ErrConflict", err)
	}
	a.mu.RLock()
	inClear := bytes.Contains(approved.Wrapped, a.key)
	a.mu.RUnlock()
	if inClear {
		t.Fatal("the master key is in the store in clear")
	}
	// B's wrapped key, given to C: C's transport key does not open it.
	if _, err := st.ApproveJoin(ctx, jc.ID, approved.Wrapped, "mallory"); err != nil {
		t.Fatal(err)
	}
	if _, err := FinishJoin(ctx, c, st); !errors.Is(err, ErrJoinKey) {
		t.Fatalf("another replica's wrapped key: %v, want ErrJoinKey", err)
	}
	if _, err := c.Open(ctx); !errors.Is(err, ErrNoMasterKey) {
		t.Fatalf("the replica that could not open the wrapped key has a master key: %v", err)
	}

	got, err := FinishJoin(ctx, b, st)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != j.ID {
		t.Fatalf("finished %s, want %s", got.ID, j.ID)
	}
	if _, err := st.GetJoin(ctx, j.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the request (and its wrapped key) stays in the store: %v", err)
	}
	if _, err := b.OpenTransportKey(ctx); !errors.Is(err, ErrNoJoin) {
		t.Fatalf("the transport key stays: %v", err)
	}
	vb, err := New(ctx, b, st, true, Options{})
	if err != nil {
		t.Fatalf("joined replica's vault: %v", err)
	}
	defer vb.Close()
	pub, guest := newGuest(t)
	ws, err := vb.Release(ctx, []string{"db"}, pub, "sb")
	if err != nil {
		t.Fatalf("joined replica releases: %v", err)
	}
	if pt, err := guest.Open("sb", "db", ws[0].Sealed); err != nil || string(pt) != "hunter2" {
		t.Fatalf("released %q, %v", pt, err)
	}
	if _, err := StartJoin(ctx, b, st, "replica-2"); !errors.Is(err, ErrMasterKeyExists) {
		t.Fatalf("join of a replica that has a key: %v, want ErrMasterKeyExists", err)
	}
	if _, err := FinishJoin(ctx, b, st); !errors.Is(err, ErrMasterKeyExists) {
		t.Fatalf("finish of a replica that has a key: %v, want ErrMasterKeyExists", err)
	}

	// A key wrapped by a vault of another store does not open this store's
	// vault: the joining replica refuses it.
	d := newJoiner(t)
	jd, err := StartJoin(ctx, d, st, "replica-4")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := New(ctx, initialised(t), openStore(t), false, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	if _, err := stranger.ApproveJoin(ctx, st, jd.ID, "mallory"); err != nil {
		t.Fatal(err)
	}
	if _, err := FinishJoin(ctx, d, st); !errors.Is(err, ErrWrongMasterKey) {
		t.Fatalf("a key that does not open the store: %v, want ErrWrongMasterKey", err)
	}
	if _, err := d.Open(ctx); !errors.Is(err, ErrNoMasterKey) {
		t.Fatalf("the wrong key was imported: %v", err)
	}

	// A denied (deleted) request: the replica is told to start again.
	if err := st.DeleteJoin(ctx, jc.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := FinishJoin(ctx, c, st); !errors.Is(err, ErrNoJoin) {
		t.Fatalf("finish of a removed request: %v, want ErrNoJoin", err)
	}
}

// TestTransportKeyFiles: the transport key is kept 0600 and, by the tpm
// backend, sealed (tested with the tpm backend in TestJoinTPMBackend).
func TestTransportKeyFiles(t *testing.T) {
	ctx := context.Background()
	b := fileBackend(t)
	if _, err := b.OpenTransportKey(ctx); !errors.Is(err, ErrNoJoin) {
		t.Fatalf("no transport key: %v", err)
	}
	if err := b.SealTransportKey(ctx, []byte("k")); err != nil {
		t.Fatal(err)
	}
	if err := b.SealTransportKey(ctx, []byte("k")); !errors.Is(err, ErrMasterKeyExists) {
		t.Fatalf("second transport key: %v", err)
	}
	fi, err := os.Stat(filepath.Join(b.Dir, FileTransportKeyName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("transport key file: %v %v", fi, err)
	}
	if err := b.RemoveTransportKey(); err != nil {
		t.Fatal(err)
	}
	if err := b.RemoveTransportKey(); err != nil {
		t.Fatalf("removing an absent transport key: %v", err)
	}
	if err := b.Import(ctx, []byte("short")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("import of a short key: %v", err)
	}
}

func newDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }
