package embedded

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	bolt "go.etcd.io/bbolt"
)

// ---- secrets ----

func (s *boltStore) PutSecret(ctx context.Context, sec store.Secret, prevVersion uint64) error {
	if err := store.ValidateSecret(&sec, prevVersion); err != nil {
		return err
	}
	now := store.Nanos(s.now())
	return s.write(ctx, func(tx *txn) error {
		b := tx.Bucket(bktSecrets)
		old, err := get[record.Secret](b, []byte(sec.Name))
		if err != nil {
			return err
		}
		var cur uint64
		created := store.Nanos(sec.CreatedAt)
		if old != nil {
			cur, created = old.Version, old.Created
		}
		if cur != prevVersion {
			return logical(fmt.Errorf("secret %q is at version %d, not %d: %w", sec.Name, cur, prevVersion, store.ErrConflict))
		}
		if created == 0 {
			created = now
		}
		upd := store.Nanos(sec.UpdatedAt)
		if upd == 0 {
			upd = now
		}
		return put(b, []byte(sec.Name), record.Secret{Name: sec.Name, Version: sec.Version, Size: sec.Size, Desc: sec.Description, Created: created, Updated: upd, CT: sec.Ciphertext})
	})
}

func (s *boltStore) GetSecret(ctx context.Context, name string) (store.Secret, error) {
	var out store.Secret
	err := s.view(func(tx *bolt.Tx) error {
		r, err := get[record.Secret](tx.Bucket(bktSecrets), []byte(name))
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("secret %q: %w", name, store.ErrNotFound)
		}
		out = store.Secret{SecretMeta: r.Meta(), Ciphertext: r.CT}
		return nil
	})
	return out, err
}

func (s *boltStore) ListSecrets(ctx context.Context) ([]store.SecretMeta, error) {
	var out []store.SecretMeta
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bktSecrets).ForEach(func(k, v []byte) error {
			var r record.Secret
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("store: corrupt secret %q: %w", k, err)
			}
			out = append(out, r.Meta())
			return nil
		})
	})
	return out, err
}

func (s *boltStore) DeleteSecret(ctx context.Context, name string) error {
	return s.write(ctx, func(tx *txn) error {
		b := tx.Bucket(bktSecrets)
		if b.Get([]byte(name)) == nil {
			return logical(fmt.Errorf("secret %q: %w", name, store.ErrNotFound))
		}
		return b.Delete([]byte(name))
	})
}
