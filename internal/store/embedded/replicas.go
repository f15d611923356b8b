package embedded

import (
	"context"
	"fmt"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	bolt "go.etcd.io/bbolt"
)

// ---- embedded ----

var (
	// bktJoins holds replica join requests (record.Join by id). The embedded
	// store serves one replica; it keeps them so that both stores pass one
	// conformance suite.
	bktJoins = []byte("replicajoins")
	// vaultCheckKey holds the vault's key-check value in bktMeta.
	vaultCheckKey = []byte("vaultcheck")
)

func (s *boltStore) PutVaultCheck(ctx context.Context, check []byte) error {
	if err := store.ValidateVaultCheck(check); err != nil {
		return err
	}
	return s.write(ctx, func(tx *txn) error {
		m := tx.Bucket(bktMeta)
		if m.Get(vaultCheckKey) != nil {
			return logical(fmt.Errorf("vault check value: %w", store.ErrConflict))
		}
		return m.Put(vaultCheckKey, append([]byte(nil), check...))
	})
}

func (s *boltStore) VaultCheck(ctx context.Context) ([]byte, error) {
	var out []byte
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bktMeta).Get(vaultCheckKey)
		if v == nil {
			return fmt.Errorf("vault check value: %w", store.ErrNotFound)
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

func (s *boltStore) CreateJoin(ctx context.Context, j store.Join) error {
	if err := store.ValidateJoin(&j); err != nil {
		return err
	}
	now := store.Nanos(s.now())
	return s.write(ctx, func(tx *txn) error {
		b := tx.Bucket(bktJoins)
		if b.Get([]byte(j.ID)) != nil {
			return logical(fmt.Errorf("join %s: %w", j.ID, store.ErrConflict))
		}
		return put(b, []byte(j.ID), record.Join{ID: j.ID, Node: j.Node, PublicKey: j.PublicKey, State: string(store.JoinPending), Created: now, Updated: now})
	})
}

func (s *boltStore) GetJoin(ctx context.Context, id string) (store.Join, error) {
	var out store.Join
	err := s.view(func(tx *bolt.Tx) error {
		r, err := get[record.Join](tx.Bucket(bktJoins), []byte(id))
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("join %q: %w", id, store.ErrNotFound)
		}
		out = r.Join()
		return nil
	})
	return out, err
}

func (s *boltStore) ListJoins(ctx context.Context) ([]store.Join, error) {
	var out []store.Join
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bktJoins).ForEach(func(k, _ []byte) error {
			r, err := get[record.Join](tx.Bucket(bktJoins), k)
			if err != nil {
				return err
			}
			out = append(out, r.Join())
			return nil
		})
	})
	return out, err
}

func (s *boltStore) ApproveJoin(ctx context.Context, id string, wrapped []byte, by string) (store.Join, error) {
	if err := store.ValidateApproval(id, wrapped, by); err != nil {
		return store.Join{}, err
	}
	now := store.Nanos(s.now())
	var out store.Join
	err := s.write(ctx, func(tx *txn) error {
		b := tx.Bucket(bktJoins)
		r, err := get[record.Join](b, []byte(id))
		if err != nil {
			return err
		}
		if r == nil {
			return logical(fmt.Errorf("join %q: %w", id, store.ErrNotFound))
		}
		if r.State != string(store.JoinPending) {
			return logical(fmt.Errorf("join %s is %s, not pending: %w", id, r.State, store.ErrConflict))
		}
		r.State, r.Wrapped, r.ApprovedBy, r.Updated = string(store.JoinApproved), append([]byte(nil), wrapped...), by, now
		out = r.Join()
		return put(b, []byte(id), r)
	})
	if err != nil {
		return store.Join{}, err
	}
	return out, nil
}

func (s *boltStore) DeleteJoin(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *txn) error {
		b := tx.Bucket(bktJoins)
		if b.Get([]byte(id)) == nil {
			return logical(fmt.Errorf("join %q: %w", id, store.ErrNotFound))
		}
		return b.Delete([]byte(id))
	})
}
