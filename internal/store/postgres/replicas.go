package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	"github.com/jackc/pgx/v5"
)

// ---- PostgreSQL ----

func (s *pgStore) PutVaultCheck(ctx context.Context, check []byte) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := store.ValidateVaultCheck(check); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO vault_check (id, value) VALUES (1, $1) ON CONFLICT DO NOTHING`, check)
	if err != nil {
		return fmt.Errorf("store: writing the vault check value: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("vault check value: %w", store.ErrConflict)
	}
	return nil
}

func (s *pgStore) VaultCheck(ctx context.Context) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var v []byte
	err := s.pool.QueryRow(ctx, `SELECT value FROM vault_check WHERE id = 1`).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("vault check value: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: reading the vault check value: %w", err)
	}
	return v, nil
}

const pgJoinCols = `id, node, public_key, state, wrapped, approved_by, created, updated`

func scanJoin(row pgx.Row) (store.Join, error) {
	var r record.Join
	err := row.Scan(&r.ID, &r.Node, &r.PublicKey, &r.State, &r.Wrapped, &r.ApprovedBy, &r.Created, &r.Updated)
	return r.Join(), err
}

func (s *pgStore) CreateJoin(ctx context.Context, j store.Join) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := store.ValidateJoin(&j); err != nil {
		return err
	}
	now := store.Nanos(s.now())
	tag, err := s.pool.Exec(ctx, `INSERT INTO replica_joins (`+pgJoinCols+`) VALUES ($1, $2, $3, $4, NULL, '', $5, $5)
		ON CONFLICT (id) DO NOTHING`, j.ID, j.Node, j.PublicKey, string(store.JoinPending), now)
	if err != nil {
		return fmt.Errorf("store: writing join %s: %w", j.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("join %s: %w", j.ID, store.ErrConflict)
	}
	return nil
}

func (s *pgStore) GetJoin(ctx context.Context, id string) (store.Join, error) {
	if err := s.check(); err != nil {
		return store.Join{}, err
	}
	j, err := scanJoin(s.pool.QueryRow(ctx, `SELECT `+pgJoinCols+` FROM replica_joins WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Join{}, fmt.Errorf("join %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Join{}, fmt.Errorf("store: reading join %q: %w", id, err)
	}
	return j, nil
}

func (s *pgStore) ListJoins(ctx context.Context) ([]store.Join, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+pgJoinCols+` FROM replica_joins ORDER BY id COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("store: listing joins: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Join, error) { return scanJoin(row) })
	if err != nil {
		return nil, fmt.Errorf("store: listing joins: %w", err)
	}
	return out, nil
}

func (s *pgStore) ApproveJoin(ctx context.Context, id string, wrapped []byte, by string) (store.Join, error) {
	if err := s.check(); err != nil {
		return store.Join{}, err
	}
	if err := store.ValidateApproval(id, wrapped, by); err != nil {
		return store.Join{}, err
	}
	j, err := scanJoin(s.pool.QueryRow(ctx, `UPDATE replica_joins SET state = $2, wrapped = $3, approved_by = $4, updated = $5
		WHERE id = $1 AND state = $6 RETURNING `+pgJoinCols, id, string(store.JoinApproved), wrapped, by, store.Nanos(s.now()), string(store.JoinPending)))
	if errors.Is(err, pgx.ErrNoRows) {
		if _, gerr := s.GetJoin(ctx, id); gerr != nil {
			return store.Join{}, gerr
		}
		return store.Join{}, fmt.Errorf("join %s is not pending: %w", id, store.ErrConflict)
	}
	if err != nil {
		return store.Join{}, fmt.Errorf("store: approving join %s: %w", id, err)
	}
	return j, nil
}

func (s *pgStore) DeleteJoin(ctx context.Context, id string) error {
	if err := s.check(); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM replica_joins WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("store: deleting join %q: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("join %q: %w", id, store.ErrNotFound)
	}
	return nil
}
