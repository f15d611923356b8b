package embedded_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/internal/store/storetest"
)

var tr0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// TestCompactEmbedded: after retention purged most of the store, the file
// keeps its size (bbolt never shrinks) until Compact rewrites it;
// everything kept is still there and the chain verifies from its seal.
// While the store is open (attestd running), compaction is refused.
func TestCompactEmbedded(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := embedded.Open(ctx, dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	old := storetest.RecordAttestationsAt(t, s, 2900, tr0)
	ids := storetest.RecordAttestationsAt(t, s, 100, tr0.Add(time.Hour))
	key := storetest.SealKey(t)
	if p, err := store.Retain(ctx, s, tr0.Add(time.Minute), store.RetainOptions{Signer: key}); err != nil || p.Attestations != 2900 {
		t.Fatalf("Retain: %+v, %v", p, err)
	} else if err != nil {
		t.Fatal(err)
	}

	_, err = embedded.Compact(dir)
	if !errors.Is(err, embedded.ErrStoreInUse) {
		t.Fatalf("compacting a store in use: %v", err)
	}
	s.Close()
	path := filepath.Join(dir, embedded.File)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := embedded.Compact(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("store file: %d bytes before compaction, %d after", res.Before, res.After)
	if res.Before != before.Size() || res.After*4 > res.Before {
		t.Fatalf("compaction: %d -> %d bytes, want at least 4x smaller", res.Before, res.After)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != res.After {
		t.Fatalf("file after compaction: %v, %v", fi, err)
	}
	if _, err := os.Stat(path + ".compact"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("temporary file left: %v", err)
	}
	s, err = embedded.Open(ctx, dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if res, err := store.VerifyAudit(ctx, s, store.VerifyOptions{SealKey: &key.PublicKey}); err != nil || res.Records != 100 {
		t.Fatalf("after compaction: %+v, %v", res, err)
	}
	if _, err := s.GetAttestation(ctx, ids[99]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAttestation(ctx, old[0]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("purged attestation after compaction: %v", err)
	}
}

func TestCompactEmbeddedRefuses(t *testing.T) {
	empty := t.TempDir()
	if _, err := embedded.Compact(empty); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no store: %v", err)
	}
	notStore := t.TempDir()
	if err := os.Mkdir(filepath.Join(notStore, embedded.File), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := embedded.Compact(notStore); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("a directory named like the store: %v", err)
	}
}
