package embedded

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	"github.com/bulwark-project/bulwark/tpm/limits"
	bolt "go.etcd.io/bbolt"
)

// ---- nodes ----

func (s *boltStore) CreateNode(ctx context.Context, n store.Node) error {
	if err := store.ValidateNode(&n); err != nil {
		return err
	}
	now := store.Nanos(s.now())
	rec := record.FromNode(&n)
	rec.Created, rec.Updated, rec.LVUpdated = now, now, now
	return s.write(ctx, func(tx *txn) error {
		if tx.Bucket(bktNodes).Get([]byte(n.ID)) != nil { // a transaction sees its own writes
			return logical(fmt.Errorf("node %s: %w", n.ID, store.ErrConflict))
		}
		return s.putNode(tx, &rec)
	})
}

func (s *boltStore) GetNode(ctx context.Context, id string) (store.Node, error) {
	r, err := s.readNode(id)
	if err != nil {
		return store.Node{}, err
	}
	if r == nil {
		return store.Node{}, fmt.Errorf("node %s: %w", id, store.ErrNotFound)
	}
	return r.Node(), nil
}

func (s *boltStore) UpdateNode(ctx context.Context, id string, fn func(*store.Node) error) (store.Node, error) {
	var out store.Node
	err := s.write(ctx, func(tx *txn) error {
		r, err := s.nodeIn(tx, id)
		if err != nil {
			return err
		}
		if r == nil {
			return logical(fmt.Errorf("node %s: %w", id, store.ErrNotFound))
		}
		n := r.Node()
		if err := fn(&n); err != nil {
			return logical(err)
		}
		if n.ID != r.ID || !bytes.Equal(n.EKPublic, r.EKPublic) {
			return logical(fmt.Errorf("node %s: UpdateNode may not change ID or EKPublic: %w", id, store.ErrInvalid))
		}
		if err := store.ValidateNode(&n); err != nil {
			return logical(err)
		}
		nr := record.FromNode(&n)
		nr.Created, nr.Updated, nr.LVUpdated = r.Created, store.Nanos(s.now()), r.LVUpdated
		if nr.Last() != r.Last() { // fn changed the last verdict
			nr.LVUpdated = nr.Updated
		}
		out = nr.Node()
		return s.putNode(tx, &nr)
	})
	return out, err
}

func (s *boltStore) ListNodes(ctx context.Context) ([]store.Node, error) {
	var out []store.Node
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bktNodes).ForEach(func(k, v []byte) error {
			r, err := s.decodeNodeRec(tx, k, v)
			if err != nil {
				return err
			}
			out = append(out, r.Node())
			return nil
		})
	})
	return out, err
}

func (s *boltStore) DeleteNode(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *txn) error {
		if tx.Bucket(bktNodes).Get([]byte(id)) == nil {
			return logical(fmt.Errorf("node %s: %w", id, store.ErrNotFound))
		}
		if err := deletePrefix(tx, id); err != nil {
			return err
		}
		if err := deleteSandboxes(tx, id); err != nil {
			return err
		}
		return s.deleteNode(tx, id)
	})
}

// ---- nonces ----

// IssueNonce keeps the nonce in memory only (nonceTable). The embedded
// store has exactly one process (the file is locked), and a nonce lives for
// seconds: after a restart every outstanding nonce is unknown, so a replay
// across a restart is still refused (fail closed; the host asks for a new
// challenge). This spares two of the five durable writes of an attestation
// and its release.
func (s *boltStore) IssueNonce(ctx context.Context, n store.Nonce) error {
	if err := store.ValidateNonce(&n); err != nil {
		return err
	}
	if s.isClosed() {
		return store.ErrClosed
	}
	return s.nonces.issue(sha256.Sum256(n.Value), n.NodeID, store.Nanos(n.Expires), store.Nanos(s.now()))
}

func (s *boltStore) ConsumeNonce(ctx context.Context, value []byte, nodeID string, now time.Time) error {
	if limits.CheckNonceSize(len(value)) != nil {
		return fmt.Errorf("nonce of %d bytes: %w", len(value), store.ErrNonceUnknown)
	}
	if s.isClosed() {
		return store.ErrClosed
	}
	return s.nonces.consume(sha256.Sum256(value), nodeID, store.Nanos(now))
}

func (s *boltStore) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}
