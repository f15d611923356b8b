package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ---- secrets ----

func (s *pgStore) PutSecret(ctx context.Context, sec store.Secret, prevVersion uint64) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := store.ValidateSecret(&sec, prevVersion); err != nil {
		return err
	}
	now := store.Nanos(s.now())
	created, updated := store.Nanos(sec.CreatedAt), store.Nanos(sec.UpdatedAt)
	if created == 0 {
		created = now
	}
	if updated == 0 {
		updated = now
	}
	var tag pgconn.CommandTag
	var err error
	if prevVersion == 0 {
		tag, err = s.pool.Exec(ctx, `INSERT INTO secrets (name, version, size, description, created, updated, ciphertext)
			VALUES ($1, 1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING`, sec.Name, sec.Size, sec.Description, created, updated, sec.Ciphertext)
	} else {
		tag, err = s.pool.Exec(ctx, `UPDATE secrets SET version = $2, size = $3, description = $4, updated = $5, ciphertext = $6
			WHERE name = $1 AND version = $7`, sec.Name, int64(sec.Version), sec.Size, sec.Description, updated, sec.Ciphertext, int64(prevVersion))
	}
	if err != nil {
		return fmt.Errorf("store: writing secret %q: %w", sec.Name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("secret %q is not at version %d: %w", sec.Name, prevVersion, store.ErrConflict)
	}
	return nil
}

func (s *pgStore) GetSecret(ctx context.Context, name string) (store.Secret, error) {
	if err := s.check(); err != nil {
		return store.Secret{}, err
	}
	var r record.Secret
	var v int64
	err := s.pool.QueryRow(ctx, `SELECT name, version, size, description, created, updated, ciphertext FROM secrets WHERE name = $1`, name).
		Scan(&r.Name, &v, &r.Size, &r.Desc, &r.Created, &r.Updated, &r.CT)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Secret{}, fmt.Errorf("secret %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return store.Secret{}, fmt.Errorf("store: reading secret %q: %w", name, err)
	}
	r.Version = uint64(v)
	return store.Secret{SecretMeta: r.Meta(), Ciphertext: r.CT}, nil
}

func (s *pgStore) ListSecrets(ctx context.Context) ([]store.SecretMeta, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT name, version, size, description, created, updated FROM secrets ORDER BY name COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("store: listing secrets: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.SecretMeta, error) {
		var r record.Secret
		var v int64
		err := row.Scan(&r.Name, &v, &r.Size, &r.Desc, &r.Created, &r.Updated)
		r.Version = uint64(v)
		return r.Meta(), err
	})
	if err != nil {
		return nil, fmt.Errorf("store: listing secrets: %w", err)
	}
	return out, nil
}

func (s *pgStore) DeleteSecret(ctx context.Context, name string) error {
	if err := s.check(); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM secrets WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("store: deleting secret %q: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("secret %q: %w", name, store.ErrNotFound)
	}
	return nil
}
