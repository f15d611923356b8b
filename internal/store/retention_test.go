package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/pgtest"
	"github.com/bulwark-project/bulwark/internal/store/storetest"
)

var tr0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// purgedChain appends 12 records a minute apart and purges the first 4
// under a seal signed by the returned key.
func purgedChain(t *testing.T, s store.Store) *store.VerifyOptions {
	ctx := context.Background()
	for i := range 12 {
		if _, err := s.AppendAudit(ctx, store.AuditEntry{Time: tr0.Add(time.Duration(i) * time.Minute), Kind: store.KindAdmin,
			Subject: fmt.Sprint(i), Details: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}); err != nil {
			t.Fatal(err)
		}
	}
	key := storetest.SealKey(t)
	p, err := store.Retain(ctx, s, tr0.Add(3*time.Minute+time.Second), store.RetainOptions{Signer: key})
	if err != nil || p.Audit != 4 {
		t.Fatalf("Retain: %+v, %v", p, err)
	}
	opts := &store.VerifyOptions{SealKey: &key.PublicKey}
	if res, err := store.VerifyAudit(ctx, s, *opts); err != nil || res.First != 5 {
		t.Fatalf("purged chain, untouched: %+v, %v", res, err)
	}
	return opts
}

// TestEmbeddedAuditTamperAfterPurge: once retention has purged the start
// of the log, a record removed or altered in the kept range, or a seal
// removed or moved, is still reported.
func TestEmbeddedAuditTamperAfterPurge(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tamper  func(tx *bolt.Tx) error
		wantPos uint64
	}{
		{"drop the first kept record", func(tx *bolt.Tx) error { return tx.Bucket([]byte("audit")).Delete(key(5)) }, 5},
		{"drop two kept records", func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("audit"))
			return errors.Join(b.Delete(key(5)), b.Delete(key(6)))
		}, 5},
		{"drop a kept record mid-log", func(tx *bolt.Tx) error { return tx.Bucket([]byte("audit")).Delete(key(8)) }, 8},
		{"edit a kept record", func(tx *bolt.Tx) error {
			return editJSON(tx.Bucket([]byte("audit")), 9, func(m map[string]any) { m["subject"] = "other" })
		}, 9},
		{"remove the seal", func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Delete([]byte("audit_seal")) }, 1},
		{"move the seal forward, records dropped", func(tx *bolt.Tx) error {
			a, m := tx.Bucket([]byte("audit")), tx.Bucket([]byte("meta"))
			var seal, rec map[string]any
			if err := json.Unmarshal(m.Get([]byte("audit_seal")), &seal); err != nil {
				return err
			}
			if err := json.Unmarshal(a.Get(key(6)), &rec); err != nil {
				return err
			}
			seal["seq"], seal["hash"] = 6, rec["hash"]
			v, _ := json.Marshal(seal)
			return errors.Join(m.Put([]byte("audit_seal"), v), a.Delete(key(5)), a.Delete(key(6)))
		}, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			s, err := store.OpenEmbedded(ctx, dir, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			opts := purgedChain(t, s)
			s.Close()
			db, err := bolt.Open(dir+"/"+store.EmbeddedFile, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(tc.tamper); err != nil {
				t.Fatal(err)
			}
			db.Close()
			s, err = store.OpenEmbedded(ctx, dir, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			wantChainError(t, s, *opts, tc.wantPos)
		})
	}
}

func TestPostgresAuditTamperAfterPurge(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sql     string
		wantPos uint64
	}{
		{"drop the first kept record", `DELETE FROM audit WHERE seq = 5`, 5},
		{"drop two kept records", `DELETE FROM audit WHERE seq IN (5, 6)`, 5},
		{"drop a kept record mid-log", `DELETE FROM audit WHERE seq = 8`, 8},
		{"edit a kept record", `UPDATE audit SET subject = 'other' WHERE seq = 9`, 9},
		{"remove the seal", `UPDATE audit_seal SET seq = 0`, 1},
		{"move the seal forward, records dropped", `UPDATE audit_seal SET seq = 6, hash = (SELECT hash FROM audit WHERE seq = 6); DELETE FROM audit WHERE seq IN (5, 6)`, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dsn := pgtest.DSN(t)
			s, err := store.Open(ctx, dsn, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			opts := purgedChain(t, s)
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, tc.sql); err != nil {
				t.Fatal(err)
			}
			wantChainError(t, s, *opts, tc.wantPos)
		})
	}
}

func wantChainError(t *testing.T, s store.Store, opts store.VerifyOptions, pos uint64) {
	t.Helper()
	_, err := store.VerifyAudit(context.Background(), s, opts)
	var ce *store.ChainError
	if !errors.As(err, &ce) || !errors.Is(err, store.ErrAuditChain) {
		t.Fatalf("tampered chain verified: %v", err)
	}
	if ce.Position != pos {
		t.Fatalf("first bad record reported at %d, want %d (%v)", ce.Position, pos, err)
	}
}

func pgxConnect(dsn string) (*pgx.Conn, error) { return pgx.Connect(context.Background(), dsn) }
