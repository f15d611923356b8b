package embedded_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/internal/store/storetest"
	bolt "go.etcd.io/bbolt"
)

func openEmbedded(t *testing.T) store.Store {
	s, err := embedded.Open(context.Background(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEmbeddedConformance(t *testing.T) {
	storetest.Run(t, openEmbedded)
}

// The benchmarks' baseline (a transaction per write, no committer) must be
// as correct as the store it is compared with.
func TestEmbeddedUnbatchedConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := embedded.OpenUnbatched(context.Background(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestEmbeddedReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := embedded.Open(ctx, dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := storetest.NewNode(t)
	if err := s.CreateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	rec, err := s.AppendAudit(ctx, store.AuditEntry{Kind: store.KindEnroll, NodeID: n.ID})
	if err != nil {
		t.Fatal(err)
	}
	nonce := []byte("0123456789abcdef0123456789abcdef")
	if err := s.IssueNonce(ctx, store.Nonce{Value: nonce, NodeID: n.ID, Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	// A second opener is refused while the first holds the file.
	if _, err := embedded.Open(ctx, dir, store.Options{}); err == nil {
		t.Fatal("second OpenEmbedded of a busy directory succeeded")
	}
	s.Close()
	s, err = embedded.Open(ctx, dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.GetNode(ctx, n.ID); err != nil {
		t.Fatal(err)
	}
	// Nonces are memory-only: a restart invalidates outstanding ones.
	if err := s.ConsumeNonce(ctx, nonce, n.ID, time.Now()); !errors.Is(err, store.ErrNonceUnknown) {
		t.Fatalf("nonce issued before a restart: %v, want ErrNonceUnknown", err)
	}
	head, err := s.AuditHead(ctx)
	if err != nil || head.Seq != rec.Seq || string(head.Hash) != string(rec.Hash) {
		t.Fatalf("audit head after reopen = %+v, %v", head, err)
	}
}

// tamperBolt edits the audit bucket of a closed embedded store directly.
func tamperBolt(t *testing.T, dir string, fn func(b *bolt.Bucket) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, embedded.File), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return fn(tx.Bucket([]byte("audit"))) }); err != nil {
		t.Fatal(err)
	}
}

func key(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func editJSON(b *bolt.Bucket, seq uint64, fn func(m map[string]any)) error {
	var m map[string]any
	if err := json.Unmarshal(b.Get(key(seq)), &m); err != nil {
		return err
	}
	fn(m)
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return b.Put(key(seq), v)
}

func TestEmbeddedAuditTamper(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tamper  func(b *bolt.Bucket) error
		wantPos uint64
	}{
		{"edit subject", func(b *bolt.Bucket) error {
			return editJSON(b, 4, func(m map[string]any) { m["subject"] = "other" })
		}, 4},
		{"edit details", func(b *bolt.Bucket) error {
			return editJSON(b, 2, func(m map[string]any) { m["details"] = []byte(`{"i":99}`) })
		}, 2},
		{"edit time", func(b *bolt.Bucket) error {
			return editJSON(b, 7, func(m map[string]any) { m["time"] = m["time"].(float64) + 1000 })
		}, 7},
		{"drop middle", func(b *bolt.Bucket) error { return b.Delete(key(5)) }, 5},
		{"drop first", func(b *bolt.Bucket) error { return b.Delete(key(1)) }, 1},
		{"swap two", func(b *bolt.Bucket) error {
			v3, v6 := append([]byte(nil), b.Get(key(3))...), append([]byte(nil), b.Get(key(6))...)
			if err := b.Put(key(3), v6); err != nil {
				return err
			}
			return b.Put(key(6), v3)
		}, 3},
		{"renumber after drop", func(b *bolt.Bucket) error {
			// Drop 5 and shift 6.. down, fixing seq fields but not hashes.
			if err := b.Delete(key(5)); err != nil {
				return err
			}
			for s := uint64(6); s <= 8; s++ {
				v := b.Get(key(s))
				var m map[string]any
				if err := json.Unmarshal(v, &m); err != nil {
					return err
				}
				m["seq"] = s - 1
				nv, _ := json.Marshal(m)
				if err := b.Delete(key(s)); err != nil {
					return err
				}
				if err := b.Put(key(s-1), nv); err != nil {
					return err
				}
			}
			return nil
		}, 5},
		// The head is the last record: set its seq to 0 and a walk up to
		// the head's seq checked nothing ("audit log OK: 0 records").
		{"head seq set to 0", func(b *bolt.Bucket) error {
			return editJSON(b, 8, func(m map[string]any) { m["seq"] = 0 })
		}, 8},
		{"all seqs set to 0", func(b *bolt.Bucket) error {
			for s := uint64(1); s <= 8; s++ {
				if err := editJSON(b, s, func(m map[string]any) { m["seq"] = 0 }); err != nil {
					return err
				}
			}
			return nil
		}, 1},
		{"record stored under key 0", func(b *bolt.Bucket) error {
			return b.Put(key(0), append([]byte(nil), b.Get(key(1))...))
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			s, err := embedded.Open(ctx, dir, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 8 {
				if _, err := s.AppendAudit(ctx, store.AuditEntry{Kind: store.KindAdmin, Subject: fmt.Sprint(i), Details: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := store.VerifyAudit(ctx, s, store.VerifyOptions{}); err != nil {
				t.Fatalf("untouched chain: %v", err)
			}
			s.Close()
			tamperBolt(t, dir, tc.tamper)
			s, err = embedded.Open(ctx, dir, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_, err = store.VerifyAudit(ctx, s, store.VerifyOptions{})
			var ce *store.ChainError
			if !errors.As(err, &ce) || !errors.Is(err, store.ErrAuditChain) {
				t.Fatalf("tampered chain verified: %v", err)
			}
			if ce.Position != tc.wantPos {
				t.Fatalf("first bad record reported at %d, want %d (%v)", ce.Position, tc.wantPos, err)
			}
		})
	}
}
