package embedded

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/store/internal/record"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/tpm/limits"
	bolt "go.etcd.io/bbolt"
)

// The node cache (nodecache.go) must never change what the embedded store
// answers: these tests hold it to the database underneath.

func cacheTestStore(t *testing.T, dir string) *boltStore {
	t.Helper()
	s, err := Open(context.Background(), dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return store.Unclassified(s).(*boltStore)
}

func cacheTestNode(t *testing.T) store.Node {
	t.Helper()
	b := make([]byte, 90+88+34)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return store.Node{ID: limits.NodeID(b[:90]), EKPublic: b[:90], AKPublic: b[90:178], AKName: b[178:], State: store.NodeEnrolled}
}

// revokeIn revokes node id in transaction tx.
func revokeIn(s *boltStore, tx *txn, id string) error {
	r, err := s.nodeIn(tx, id)
	if err != nil {
		return err
	}
	r.State = store.NodeRevoked
	return s.putNode(tx, r)
}

// storeWithNode opens an embedded store with one node enrolled.
func storeWithNode(t *testing.T) (*boltStore, store.Node) {
	t.Helper()
	s := cacheTestStore(t, t.TempDir())
	n := cacheTestNode(t)
	if err := s.CreateNode(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	return s, n
}

// dbNode reads node id from a read transaction, bypassing the node cache
// (its last verdict: a pending one, else bktLast).
func dbNode(t *testing.T, s *boltStore, id string) *store.Node {
	t.Helper()
	var r *record.Node
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		r, err = s.readNodeRec(tx, id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if r == nil {
		return nil
	}
	n := r.Node()
	return &n
}

func TestNodeCacheWritesOfOneTransaction(t *testing.T) {
	ctx := context.Background()
	s, n := storeWithNode(t)
	if _, err := s.GetNode(ctx, n.ID); err != nil { // cached now
		t.Fatal(err)
	}
	// Two ops in one transaction: the second sees the first's write, not
	// the cached record.
	err := s.update(func(tx *txn) error {
		if err := revokeIn(s, tx, n.ID); err != nil {
			return err
		}
		r2, err := s.nodeIn(tx, n.ID)
		if err != nil {
			return err
		}
		if r2.State != store.NodeRevoked {
			return fmt.Errorf("second op of the transaction sees state %v, want revoked", r2.State)
		}
		r2.LVID, r2.LVAllow = "att-x", true
		return s.putNode(tx, r2)
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetNode(ctx, n.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.NodeRevoked || got.LastVerdict == nil || got.LastVerdict.AttestationID != "att-x" {
		t.Fatalf("after commit GetNode = state %v, last verdict %+v", got.State, got.LastVerdict)
	}
	if db := dbNode(t, s, n.ID); !reflect.DeepEqual(*db, got) {
		t.Fatalf("cache and database differ:\ncache %+v\ndb    %+v", got, *db)
	}
}

func TestNodeCacheRollback(t *testing.T) {
	ctx := context.Background()
	s, n := storeWithNode(t)
	before, err := s.GetNode(ctx, n.ID)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err = s.update(func(tx *txn) error {
		if err := revokeIn(s, tx, n.ID); err != nil {
			return err
		}
		if err := s.deleteNode(tx, n.ID); err != nil {
			return err
		}
		return boom // rolls the transaction back
	})
	if !errors.Is(err, boom) {
		t.Fatalf("update = %v, want boom", err)
	}
	after, err := s.GetNode(ctx, n.ID)
	if err != nil || !reflect.DeepEqual(before, after) {
		t.Fatalf("after a rolled-back transaction GetNode = %+v, %v; want %+v", after, err, before)
	}
	// A panicking UpdateNode callback rolls back too, and the store goes on.
	_, err = s.UpdateNode(ctx, n.ID, func(n *store.Node) error { n.State = store.NodeRevoked; panic("callback bug") })
	if err == nil {
		t.Fatal("UpdateNode with a panicking callback succeeded")
	}
	if after, err := s.GetNode(ctx, n.ID); err != nil || after.State != before.State {
		t.Fatalf("after a panicking update GetNode = %+v, %v", after, err)
	}
}

// Changing what GetNode returned must not change the cache.
func TestNodeCacheCopies(t *testing.T) {
	ctx := context.Background()
	s, n := storeWithNode(t)
	a, err := s.GetNode(ctx, n.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), a.AKPublic...)
	a.AKPublic[0] ^= 0xff
	a.State = store.NodeRevoked
	b, err := s.GetNode(ctx, n.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(b.AKPublic) != string(want) || b.State != store.NodeEnrolled {
		t.Fatal("editing a node GetNode returned changed the store's cache")
	}
	// The copy's byte fields share one allocation: growing one must not
	// write into the next.
	ak := append([]byte(nil), b.AKPublic...)
	_ = append(b.EKPublic, make([]byte, 64)...)
	if string(b.AKPublic) != string(ak) {
		t.Fatal("appending to EKPublic of a copy overwrote its AKPublic")
	}
	if b.EKCert != nil || b.Challenge != nil {
		t.Fatalf("absent fields came back non-nil: cert %v, challenge %v", b.EKCert, b.Challenge)
	}
}

// A reader that raced a commit never installs the older record: after
// each RecordAttestation returns, GetNode shows it, with readers filling
// the cache concurrently and a deletion and re-creation in between.
func TestNodeCacheConcurrentReaders(t *testing.T) {
	ctx := context.Background()
	s, n := storeWithNode(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.GetNode(ctx, n.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
					t.Error(err)
					return
				}
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	for i := range 300 {
		if i%100 == 99 {
			if err := s.DeleteNode(ctx, n.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetNode(ctx, n.ID); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("GetNode after DeleteNode: %v, want ErrNotFound", err)
			}
			if err := s.CreateNode(ctx, n); err != nil {
				t.Fatal(err)
			}
			continue
		}
		id := fmt.Sprintf("att-%032x", i)
		if _, err := s.RecordAttestation(ctx, store.Attestation{ID: id, NodeID: n.ID, Policy: "p", Allow: i%2 == 0}); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetNode(ctx, n.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.LastVerdict == nil || got.LastVerdict.AttestationID != id {
			t.Fatalf("after recording %s GetNode shows last verdict %+v", id, got.LastVerdict)
		}
	}
}

// The cache stays within its bound and answers like the database.
func TestNodeCacheBound(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := cacheTestStore(t, dir)
	s.nodes.max = 3
	var nodes []store.Node
	for i := range 10 {
		n := cacheTestNode(t)
		n.Challenge = &store.Challenge{SecretHash: make([]byte, 32), Expires: time.Now().Add(time.Duration(i+1) * time.Minute)}
		if err := s.CreateNode(ctx, n); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	for round := range 2 {
		for _, n := range nodes {
			got, err := s.GetNode(ctx, n.ID)
			if err != nil {
				t.Fatal(err)
			}
			if db := dbNode(t, s, n.ID); !reflect.DeepEqual(*db, got) {
				t.Fatalf("round %d: node %s: cache and database differ:\ncache %+v\ndb    %+v", round, n.ID, got, *db)
			}
		}
	}
	s.nodes.mu.Lock()
	size := len(s.nodes.recs)
	s.nodes.mu.Unlock()
	if size > 3 {
		t.Fatalf("cache holds %d nodes, bound 3", size)
	}
}

// The race the generation check closes, step by step: a reader misses,
// reads the old record, a write commits, and only then the reader fills.
func TestNodeCacheStaleFill(t *testing.T) {
	ctx := context.Background()
	s, n := storeWithNode(t)
	s.nodes.mu.Lock()
	clear(s.nodes.recs)
	s.nodes.mu.Unlock()
	miss, gen := s.nodes.lookup(n.ID)
	if miss != nil {
		t.Fatal("expected a miss")
	}
	old := dbNode(t, s, n.ID)
	if _, err := s.UpdateNode(ctx, n.ID, func(n *store.Node) error { n.State = store.NodeRevoked; return nil }); err != nil {
		t.Fatal(err)
	}
	r := record.FromNode(old)
	s.nodes.fill(gen, &r)
	got, err := s.GetNode(ctx, n.ID)
	if err != nil || got.State != store.NodeRevoked {
		t.Fatalf("after a stale fill GetNode = state %v, %v; want revoked", got.State, err)
	}
}

// The cached head of the audit chain follows commits only: an append in a
// rolled-back transaction leaves no trace, and the chain still verifies.
func TestAuditHeadCacheRollback(t *testing.T) {
	ctx := context.Background()
	s := cacheTestStore(t, t.TempDir())
	first, err := s.AppendAudit(ctx, store.AuditEntry{Kind: store.KindAdmin, Subject: "one"})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err = s.update(func(tx *txn) error {
		head, err := s.auditHeadIn(tx)
		if err != nil {
			return err
		}
		if _, err := appendAudit(tx, head, store.AuditEntry{Kind: store.KindAdmin, Subject: "lost", Time: time.Now(), Details: []byte("{}")}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("update = %v, want boom", err)
	}
	second, err := s.AppendAudit(ctx, store.AuditEntry{Kind: store.KindAdmin, Subject: "two"})
	if err != nil {
		t.Fatal(err)
	}
	if second.Seq != first.Seq+1 || string(second.Prev) != string(first.Hash) {
		t.Fatalf("append after a rollback: seq %d prev %x; want seq %d prev %x", second.Seq, second.Prev, first.Seq+1, first.Hash)
	}
	if res, err := store.VerifyAudit(ctx, s, store.VerifyOptions{}); err != nil || res.Records != 2 {
		t.Fatalf("VerifyAudit = %+v, %v; want 2 records, nil", res, err)
	}
}
