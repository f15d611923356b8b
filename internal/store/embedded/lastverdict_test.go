package embedded

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/store/internal/record"

	"github.com/bulwark-project/bulwark/internal/store"
	bolt "go.etcd.io/bbolt"
)

// The embedded store keeps a node's last verdict apart from its record
// (bktLast). These tests hold the split to what the Store API promises: a
// node reads back with the newest verdict whatever the order of the writes
// that share a transaction, from the cache and from the file alike.

func TestLastVerdictAndNodeWriteInOneTransaction(t *testing.T) {
	for _, order := range []string{"verdict then revoke", "revoke then verdict"} {
		t.Run(order, func(t *testing.T) {
			ctx := context.Background()
			s, n := storeWithNode(t)
			if _, err := s.GetNode(ctx, n.ID); err != nil { // cached now
				t.Fatal(err)
			}
			lv := record.Last{ID: "att-new", Policy: "p@1", Allow: true, Time: store.Nanos(time.Now()), Updated: store.Nanos(time.Now())}
			err := s.update(func(tx *txn) error {
				if order == "verdict then revoke" {
					if err := s.putLast(tx, n.ID, lv); err != nil {
						return err
					}
					return revokeIn(s, tx, n.ID)
				}
				if err := revokeIn(s, tx, n.ID); err != nil {
					return err
				}
				return s.putLast(tx, n.ID, lv)
			})
			if err != nil {
				t.Fatal(err)
			}
			cached, err := s.GetNode(ctx, n.ID)
			if err != nil {
				t.Fatal(err)
			}
			for what, got := range map[string]*store.Node{"cache": &cached, "file": dbNode(t, s, n.ID)} {
				if got.State != store.NodeRevoked || got.LastVerdict == nil || got.LastVerdict.AttestationID != "att-new" || !got.LastVerdict.Allow {
					t.Errorf("%s: state %v, last verdict %+v; want revoked with att-new", what, got.State, got.LastVerdict)
				}
			}
		})
	}
}

func TestRecordAttestationLeavesNodeRecord(t *testing.T) {
	ctx := context.Background()
	s, n := storeWithNode(t)
	before := rawBucket(t, s, bktNodes, n.ID)
	t0 := time.Now().Add(time.Minute).UTC().Truncate(time.Microsecond)
	if _, err := s.RecordAttestation(ctx, store.Attestation{ID: "att-1", NodeID: n.ID, Policy: "p@1", Reasons: []string{"no"}, CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if after := rawBucket(t, s, bktNodes, n.ID); !bytes.Equal(before, after) {
		t.Errorf("RecordAttestation rewrote the node's record:\n%s\n%s", before, after)
	}
	if v := rawBucket(t, s, bktLast, n.ID); v != nil {
		t.Errorf("RecordAttestation wrote the last verdict in place (%s): it is appended to the log", v)
	}
	lv, ok := s.last.lastOfPending(n.ID)
	if !ok || lv.ID != "att-1" || lv.Allow || lv.Time != store.Nanos(t0) {
		t.Fatalf("pending last verdict = %+v, %v", lv, ok)
	}
	got, err := s.GetNode(ctx, n.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.UpdatedAt.Before(t0.Add(-time.Minute)) || got.LastVerdict == nil || !got.LastVerdict.Time.Equal(t0) {
		t.Errorf("GetNode after a verdict: updated %v, last verdict %+v", got.UpdatedAt, got.LastVerdict)
	}
	if err := s.DeleteNode(ctx, n.ID); err != nil {
		t.Fatal(err)
	}
	if lv, ok := s.last.lastOfPending(n.ID); !ok || lv != (record.Last{}) {
		t.Errorf("DeleteNode left the last verdict pending: %+v, %v", lv, ok)
	}
}

// TestMigrateSchema1 opens a version-1 file (last verdict inside the node
// record) and finds every node, with its last verdict, in the new layout.
func TestMigrateSchema1(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n1, n2 := cacheTestNode(t), cacheTestNode(t)
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	db, err := bolt.Open(filepath.Join(dir, File), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bktNodes, bktAtt, bktSecrets, bktAudit, bktMeta} {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bktMeta).Put([]byte("schema"), []byte("1")); err != nil {
			return err
		}
		r1 := record.FromNode(&n1)
		r1.Created, r1.Updated = store.Nanos(t0), store.Nanos(t0.Add(time.Hour))
		v1, err := json.Marshal(r1)
		if err != nil {
			return err
		}
		// What version 1 wrote: the last verdict inside the record.
		v1 = append(v1[:len(v1)-1], fmt.Sprintf(`,"last_attestation":"att-old","last_policy":"web@2","last_allow":true,"last_time":%d}`, store.Nanos(t0.Add(time.Minute)))...)
		r2 := record.FromNode(&n2)
		r2.Created, r2.Updated = store.Nanos(t0), store.Nanos(t0)
		v2, err := json.Marshal(r2)
		if err != nil {
			return err
		}
		nb := tx.Bucket(bktNodes)
		if err := nb.Put([]byte(n1.ID), v1); err != nil {
			return err
		}
		return nb.Put([]byte(n2.ID), v2)
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := cacheTestStore(t, dir)
	if v := rawBucket(t, s, bktMeta, "schema"); string(v) != schemaVersion {
		t.Fatalf("schema after open = %q, want %s", v, schemaVersion)
	}
	if v := rawBucket(t, s, bktNodes, n1.ID); bytes.Contains(v, []byte("last_")) {
		t.Errorf("migrated node record still holds the last verdict: %s", v)
	}
	got, err := s.GetNode(ctx, n1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if lv := got.LastVerdict; lv == nil || lv.AttestationID != "att-old" || lv.Policy != "web@2" || !lv.Allow || !lv.Time.Equal(t0.Add(time.Minute)) {
		t.Errorf("migrated last verdict = %+v", got.LastVerdict)
	}
	if !got.UpdatedAt.Equal(t0.Add(time.Hour)) || !got.CreatedAt.Equal(t0) || !bytes.Equal(got.AKPublic, n1.AKPublic) {
		t.Errorf("migrated node = %+v", got)
	}
	if got, err := s.GetNode(ctx, n2.ID); err != nil || got.LastVerdict != nil {
		t.Errorf("node without a verdict after migration: %+v, %v", got.LastVerdict, err)
	}
	if v := rawBucket(t, s, bktLast, n2.ID); v != nil {
		t.Errorf("a last verdict appeared for a node that had none: %s", v)
	}
}

func TestSchemaRefused(t *testing.T) {
	for name, setup := range map[string]func(tx *bolt.Tx) error{
		"newer version": func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket(bktMeta)
			if err != nil {
				return err
			}
			return b.Put([]byte("schema"), []byte("9"))
		},
		"nodes without a version": func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket(bktNodes)
			if err != nil {
				return err
			}
			return b.Put([]byte("sha256:00"), []byte(`{}`))
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			db, err := bolt.Open(filepath.Join(dir, File), 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(setup); err != nil {
				t.Fatal(err)
			}
			db.Close()
			s, err := Open(context.Background(), dir, store.Options{})
			if err == nil {
				s.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), "schema") && !strings.Contains(err.Error(), "not an attestd store") {
				t.Errorf("error does not say why: %v", err)
			}
		})
	}
}

// rawBucket returns the stored bytes under key in bucket (nil if none).
func rawBucket(t *testing.T, s *boltStore, bucket []byte, key string) []byte {
	t.Helper()
	var v []byte
	if err := s.view(func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket(bucket).Get([]byte(key)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}
