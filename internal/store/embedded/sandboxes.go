package embedded

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	bolt "go.etcd.io/bbolt"
)

// ---- embedded ----

var (
	// bktSandboxes holds a sub-bucket per node: sandbox id → sandboxRec.
	bktSandboxes = []byte("sandboxes")
	// bktDecisions holds a sub-bucket per node: seq (8 bytes, big-endian)
	// → decisionRec.
	bktDecisions = []byte("decisions")
	// bktDecisionKeys holds a sub-bucket per node: Decision.Key → seq of
	// the decision with that key (8 bytes, big-endian).
	bktDecisionKeys = []byte("decisionkeys")
)

func (s *boltStore) PutSandbox(ctx context.Context, st store.SandboxState) error {
	if err := store.ValidateSandboxState(&st); err != nil {
		return err
	}
	if st.CreatedAt.IsZero() {
		st.CreatedAt = s.now()
	}
	b, err := record.EncodeSandbox(&st)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *txn) error {
		if tx.Bucket(bktNodes).Get([]byte(st.NodeID)) == nil {
			return logical(fmt.Errorf("node %s: %w", st.NodeID, store.ErrNotFound))
		}
		nb, err := tx.Bucket(bktSandboxes).CreateBucketIfNotExists([]byte(st.NodeID))
		if err != nil {
			return err
		}
		return nb.Put([]byte(st.SandboxID), b)
	})
}

func (s *boltStore) GetSandbox(ctx context.Context, nodeID, sandboxID string) (store.SandboxState, error) {
	var out store.SandboxState
	err := s.view(func(tx *bolt.Tx) error {
		var v []byte
		if nb := tx.Bucket(bktSandboxes).Bucket([]byte(nodeID)); nb != nil {
			v = nb.Get([]byte(sandboxID))
		}
		if v == nil {
			return fmt.Errorf("sandbox %s of node %s: %w", sandboxID, nodeID, store.ErrNotFound)
		}
		var err error
		out, err = record.DecodeSandbox(nodeID, sandboxID, v)
		return err
	})
	return out, err
}

func (s *boltStore) ListSandboxStates(ctx context.Context, nodeID string) ([]store.SandboxState, error) {
	var out []store.SandboxState
	err := s.view(func(tx *bolt.Tx) error {
		root := tx.Bucket(bktSandboxes)
		each := func(node []byte, nb *bolt.Bucket) error {
			return nb.ForEach(func(k, v []byte) error {
				st, err := record.DecodeSandbox(string(node), string(k), v)
				if err == nil {
					out = append(out, st)
				}
				return err
			})
		}
		if nodeID != "" {
			if nb := root.Bucket([]byte(nodeID)); nb != nil {
				return each([]byte(nodeID), nb)
			}
			return nil
		}
		return root.ForEachBucket(func(k []byte) error { return each(k, root.Bucket(k)) })
	})
	return out, err
}

func (s *boltStore) DeleteSandbox(ctx context.Context, nodeID, sandboxID string) error {
	return s.write(ctx, func(tx *txn) error {
		nb := tx.Bucket(bktSandboxes).Bucket([]byte(nodeID))
		if nb == nil || nb.Get([]byte(sandboxID)) == nil {
			return logical(fmt.Errorf("sandbox %s of node %s: %w", sandboxID, nodeID, store.ErrNotFound))
		}
		return nb.Delete([]byte(sandboxID))
	})
}

func (s *boltStore) AppendDecision(ctx context.Context, d store.Decision) (store.Decision, error) {
	if err := store.ValidateDecision(&d); err != nil {
		return store.Decision{}, err
	}
	if d.CreatedAt.IsZero() {
		d.CreatedAt = s.now()
	}
	d.CreatedAt = store.NormTime(d.CreatedAt)
	b, err := record.EncodeDecision(&d)
	if err != nil {
		return store.Decision{}, err
	}
	var existing *store.Decision
	err = s.write(ctx, func(tx *txn) error {
		existing = nil
		if tx.Bucket(bktNodes).Get([]byte(d.NodeID)) == nil {
			return logical(fmt.Errorf("node %s: %w", d.NodeID, store.ErrNotFound))
		}
		if d.Key != "" {
			if kb := tx.Bucket(bktDecisionKeys).Bucket([]byte(d.NodeID)); kb != nil {
				if sk := kb.Get([]byte(d.Key)); len(sk) == 8 {
					var v []byte
					if db := tx.Bucket(bktDecisions).Bucket([]byte(d.NodeID)); db != nil {
						v = db.Get(sk)
					}
					if v == nil {
						return logical(fmt.Errorf("store: decision key %q of node %s names a missing decision", d.Key, d.NodeID))
					}
					old, err := record.DecodeDecision(d.NodeID, binary.BigEndian.Uint64(sk), v)
					if err != nil {
						return logical(err)
					}
					existing = &old
					return logical(fmt.Errorf("decision %q of node %s (seq %d): %w", d.Key, d.NodeID, old.Seq, store.ErrConflict))
				}
			}
		}
		nb, err := tx.Bucket(bktDecisions).CreateBucketIfNotExists([]byte(d.NodeID))
		if err != nil {
			return err
		}
		seq := uint64(1)
		if k, _ := nb.Cursor().Last(); len(k) == 8 {
			seq = binary.BigEndian.Uint64(k) + 1
		}
		d.Seq = seq
		sk := binary.BigEndian.AppendUint64(nil, seq)
		if err := nb.Put(sk, b); err != nil {
			return err
		}
		if d.Key == "" {
			return nil
		}
		kb, err := tx.Bucket(bktDecisionKeys).CreateBucketIfNotExists([]byte(d.NodeID))
		if err != nil {
			return err
		}
		return kb.Put([]byte(d.Key), sk)
	})
	if existing != nil && errors.Is(err, store.ErrConflict) {
		return *existing, err
	}
	if err != nil {
		return store.Decision{}, err
	}
	return d, nil
}

func (s *boltStore) ListDecisions(ctx context.Context, nodeID string, after uint64, limit int) ([]store.Decision, error) {
	if err := store.CheckDecisionsLimit(limit); err != nil {
		return nil, err
	}
	var out []store.Decision
	err := s.view(func(tx *bolt.Tx) error {
		nb := tx.Bucket(bktDecisions).Bucket([]byte(nodeID))
		if nb == nil {
			return nil
		}
		c := nb.Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, after+1)); k != nil && len(out) < limit; k, v = c.Next() {
			if len(k) != 8 {
				continue
			}
			d, err := record.DecodeDecision(nodeID, binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// deleteSandboxes removes node id's kept sandboxes and decisions in tx.
func deleteSandboxes(tx *txn, id string) error {
	for _, b := range [][]byte{bktSandboxes, bktDecisions, bktDecisionKeys} {
		if tx.Bucket(b).Bucket([]byte(id)) != nil {
			if err := tx.Bucket(b).DeleteBucket([]byte(id)); err != nil {
				return err
			}
		}
	}
	return nil
}
