package embedded_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/internal/store/storetest"
	bolt "go.etcd.io/bbolt"
)

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
			s, err := embedded.Open(ctx, dir, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			opts := storetest.PurgedChain(t, s)
			s.Close()
			db, err := bolt.Open(dir+"/"+embedded.File, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(tc.tamper); err != nil {
				t.Fatal(err)
			}
			db.Close()
			s, err = embedded.Open(ctx, dir, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			storetest.WantChainError(t, s, *opts, tc.wantPos)
		})
	}
}
