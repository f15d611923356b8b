package embedded

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	bolt "go.etcd.io/bbolt"
)

// lastLogLen is how many entries the last verdict log holds in the file.
func lastLogLen(t *testing.T, s *boltStore) int {
	t.Helper()
	n := 0
	if err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bktLastLog).ForEach(func(k, v []byte) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// lastStep is one write of TestLastVerdictLog's sequence.
type lastStep struct {
	node int    // index into the nodes
	att  string // RecordAttestation with this id; "" = DeleteNode
}

// wantLast is the last verdict each node should read back with after
// steps ("" = none), computed from the steps themselves.
func wantLast(nodes int, steps []lastStep) []string {
	want := make([]string, nodes)
	for _, st := range steps {
		want[st.node] = st.att
	}
	return want
}

// TestLastVerdictLog: last verdicts are appended to the log, not written
// in place, and read back the same from the node cache, from a read
// transaction, after a fold (when the log reaches its size) and after a
// crash (the file as a killed process leaves it: every write committed,
// nothing folded), whatever the order of attestations and deletions.
func TestLastVerdictLog(t *testing.T) {
	steps := []lastStep{{0, "att-a1"}, {1, "att-b1"}, {0, "att-a2"}, {2, "att-c1"}, {1, ""}, {0, "att-a3"}, {2, "att-c2"}}
	for _, tc := range []struct {
		name   string
		foldAt int // 0: no fold during the test
	}{
		{"no fold", 0},
		{"folds", 3},
		{"fold every write", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			s := cacheTestStore(t, dir)
			s.last.foldAt = tc.foldAt
			if tc.foldAt == 0 {
				s.last.foldAt = 1 << 30
			}
			nodes := make([]store.Node, 3)
			for i := range nodes {
				nodes[i] = cacheTestNode(t)
				if err := s.CreateNode(ctx, nodes[i]); err != nil {
					t.Fatal(err)
				}
			}
			t0 := time.Now().UTC().Truncate(time.Microsecond)
			for i, st := range steps {
				var err error
				if st.att == "" {
					err = s.DeleteNode(ctx, nodes[st.node].ID)
				} else {
					_, err = s.RecordAttestation(ctx, store.Attestation{ID: st.att, NodeID: nodes[st.node].ID, Policy: "p", Allow: true,
						CreatedAt: t0.Add(time.Duration(i) * time.Second)})
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			logged := lastLogLen(t, s)
			switch {
			case tc.foldAt == 0 && logged != len(steps):
				t.Errorf("log holds %d entries after %d writes and no fold", logged, len(steps))
			case tc.foldAt > 0 && logged >= tc.foldAt:
				t.Errorf("log holds %d entries: no fold at %d", logged, tc.foldAt)
			}
			// The file as a crash would leave it: copied while the store is
			// open, every write acknowledged and so committed.
			b, err := os.ReadFile(filepath.Join(dir, File))
			if err != nil {
				t.Fatal(err)
			}
			crashed := t.TempDir()
			if err := os.WriteFile(filepath.Join(crashed, File), b, 0o600); err != nil {
				t.Fatal(err)
			}
			want := wantLast(len(nodes), steps)
			check := func(what string, s *boltStore, file bool) {
				t.Helper()
				for i, n := range nodes {
					got, err := s.GetNode(ctx, n.ID)
					if want[i] == "" {
						if err == nil {
							t.Errorf("%s: deleted node %d is back: %+v", what, i, got)
						}
						continue
					}
					if err != nil {
						t.Fatalf("%s: node %d: %v", what, i, err)
					}
					fromTx := dbNode(t, s, n.ID)
					for how, g := range map[string]*store.Node{"GetNode": &got, "read transaction": fromTx} {
						if g.LastVerdict == nil || g.LastVerdict.AttestationID != want[i] {
							t.Errorf("%s, %s: node %d last verdict %+v, want %s", what, how, i, g.LastVerdict, want[i])
						}
					}
					if file { // folded at open: in bktLast itself
						if v := rawBucket(t, s, bktLast, n.ID); v == nil {
							t.Errorf("%s: node %d: no last verdict in bktLast after the open's fold", what, i)
						}
					}
				}
				if file {
					if n := lastLogLen(t, s); n != 0 {
						t.Errorf("%s: log holds %d entries after the open's fold", what, n)
					}
					for i, n := range nodes {
						if want[i] == "" {
							if v := rawBucket(t, s, bktLast, n.ID); v != nil {
								t.Errorf("%s: deleted node %d has a last verdict in bktLast: %s", what, i, v)
							}
						}
					}
				}
			}
			check("open", s, false)
			check("after a crash", cacheTestStore(t, crashed), true)
			s.Close()
			check("reopened", cacheTestStore(t, dir), true)
		})
	}
}

// TestLastVerdictFoldedByTime: a pending last verdict is folded by the
// first commit after foldEvery, however few are pending.
func TestLastVerdictFoldedByTime(t *testing.T) {
	ctx := context.Background()
	clock := time.Now()
	s, err := Open(ctx, t.TempDir(), store.Options{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	bs := store.Unclassified(s).(*boltStore)
	n := cacheTestNode(t)
	if err := bs.CreateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := bs.RecordAttestation(ctx, store.Attestation{ID: fmt.Sprintf("att-%d", i), NodeID: n.ID, Policy: "p"}); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if got := lastLogLen(t, bs); got != 1 {
				t.Fatalf("log holds %d entries before foldEvery", got)
			}
			clock = clock.Add(foldEvery)
		}
	}
	if got := lastLogLen(t, bs); got != 0 {
		t.Fatalf("log holds %d entries after foldEvery", got)
	}
	if _, ok := bs.last.lastOfPending(n.ID); ok {
		t.Error("a folded verdict is still pending")
	}
	if v := rawBucket(t, bs, bktLast, n.ID); v == nil {
		t.Fatal("no last verdict in bktLast after the fold")
	}
	if got, err := bs.GetNode(ctx, n.ID); err != nil || got.LastVerdict == nil || got.LastVerdict.AttestationID != "att-1" {
		t.Fatalf("after the fold: %+v, %v", got.LastVerdict, err)
	}
}

// TestMigrateSchema3 opens a version-3 file (last verdicts in bktLast, no
// log) and finds them, with the log in place and the version raised: an
// attestd of version 3 would not read the log, so it must not open the
// file (TestSchemaRefused).
func TestMigrateSchema3(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := cacheTestStore(t, dir)
	n := cacheTestNode(t)
	if err := s.CreateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	lv := record.Last{ID: "att-v3", Policy: "p@1", Allow: true, Time: store.Nanos(time.Now()), Updated: store.Nanos(time.Now())}
	// What version 3 left: the verdict in bktLast, no log bucket.
	if err := s.db.Update(func(tx *bolt.Tx) error {
		if err := put(tx.Bucket(bktLast), []byte(n.ID), lv); err != nil {
			return err
		}
		if err := tx.DeleteBucket(bktLastLog); err != nil {
			return err
		}
		return tx.Bucket(bktMeta).Put([]byte("schema"), []byte("3"))
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = cacheTestStore(t, dir)
	if v := rawBucket(t, s, bktMeta, "schema"); string(v) != schemaVersion || schemaVersion != "4" {
		t.Fatalf("schema after open = %q, want 4", v)
	}
	got, err := s.GetNode(ctx, n.ID)
	if err != nil || got.LastVerdict == nil || got.LastVerdict.AttestationID != "att-v3" {
		t.Fatalf("migrated last verdict: %+v, %v", got.LastVerdict, err)
	}
	if _, err := s.RecordAttestation(ctx, store.Attestation{ID: "att-v4", NodeID: n.ID, Policy: "p"}); err != nil {
		t.Fatal(err)
	}
	if got := lastLogLen(t, s); got != 1 {
		t.Fatalf("log holds %d entries after a verdict", got)
	}
}
