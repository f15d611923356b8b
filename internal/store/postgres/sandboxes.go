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

func (s *pgStore) PutSandbox(ctx context.Context, st store.SandboxState) error {
	if err := s.check(); err != nil {
		return err
	}
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
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM nodes WHERE id = $1 FOR KEY SHARE`, st.NodeID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("node %s: %w", st.NodeID, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("store: reading node %s: %w", st.NodeID, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO sandbox_states (node, sandbox_id, data) VALUES ($1, $2, $3)
			ON CONFLICT (node, sandbox_id) DO UPDATE SET data = EXCLUDED.data`, st.NodeID, st.SandboxID, b); err != nil {
			return fmt.Errorf("store: writing sandbox %s: %w", st.SandboxID, err)
		}
		return nil
	})
}

func (s *pgStore) GetSandbox(ctx context.Context, nodeID, sandboxID string) (store.SandboxState, error) {
	if err := s.check(); err != nil {
		return store.SandboxState{}, err
	}
	var b []byte
	err := s.pool.QueryRow(ctx, `SELECT data FROM sandbox_states WHERE node = $1 AND sandbox_id = $2`, nodeID, sandboxID).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.SandboxState{}, fmt.Errorf("sandbox %s of node %s: %w", sandboxID, nodeID, store.ErrNotFound)
	}
	if err != nil {
		return store.SandboxState{}, fmt.Errorf("store: reading sandbox %s: %w", sandboxID, err)
	}
	return record.DecodeSandbox(nodeID, sandboxID, b)
}

func (s *pgStore) ListSandboxStates(ctx context.Context, nodeID string) ([]store.SandboxState, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT node, sandbox_id, data FROM sandbox_states WHERE $1 = '' OR node = $1 ORDER BY node, sandbox_id`, nodeID)
	if err != nil {
		return nil, fmt.Errorf("store: listing sandboxes: %w", err)
	}
	defer rows.Close()
	var out []store.SandboxState
	for rows.Next() {
		var node, id string
		var b []byte
		if err := rows.Scan(&node, &id, &b); err != nil {
			return nil, fmt.Errorf("store: listing sandboxes: %w", err)
		}
		st, err := record.DecodeSandbox(node, id, b)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

func (s *pgStore) DeleteSandbox(ctx context.Context, nodeID, sandboxID string) error {
	if err := s.check(); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM sandbox_states WHERE node = $1 AND sandbox_id = $2`, nodeID, sandboxID)
	if err != nil {
		return fmt.Errorf("store: deleting sandbox %s: %w", sandboxID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("sandbox %s of node %s: %w", sandboxID, nodeID, store.ErrNotFound)
	}
	return nil
}

func (s *pgStore) AppendDecision(ctx context.Context, d store.Decision) (store.Decision, error) {
	if err := s.check(); err != nil {
		return store.Decision{}, err
	}
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
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		existing = nil
		// The node's row lock orders its decisions (between replicas too).
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM nodes WHERE id = $1 FOR UPDATE`, d.NodeID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("node %s: %w", d.NodeID, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("store: reading node %s: %w", d.NodeID, err)
		}
		var seq int64
		if d.Key != "" {
			// Under the node's row lock: no other append of this node
			// runs meanwhile (the unique index backs it up).
			var ob []byte
			err := tx.QueryRow(ctx, `SELECT seq, data FROM decisions WHERE node = $1 AND dkey = $2`, d.NodeID, d.Key).Scan(&seq, &ob)
			switch {
			case err == nil:
				old, err := record.DecodeDecision(d.NodeID, uint64(seq), ob)
				if err != nil {
					return err
				}
				existing = &old
				return fmt.Errorf("decision %q of node %s (seq %d): %w", d.Key, d.NodeID, old.Seq, store.ErrConflict)
			case !errors.Is(err, pgx.ErrNoRows):
				return fmt.Errorf("store: reading decision %q of node %s: %w", d.Key, d.NodeID, err)
			}
		}
		if err := tx.QueryRow(ctx, `INSERT INTO decisions (node, seq, data, dkey)
			SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, NULLIF($3, '') FROM decisions WHERE node = $1 RETURNING seq`, d.NodeID, b, d.Key).Scan(&seq); err != nil {
			return fmt.Errorf("store: appending a decision for node %s: %w", d.NodeID, err)
		}
		d.Seq = uint64(seq)
		return nil
	})
	if existing != nil && errors.Is(err, store.ErrConflict) {
		return *existing, err
	}
	if err != nil {
		return store.Decision{}, err
	}
	return d, nil
}

func (s *pgStore) ListDecisions(ctx context.Context, nodeID string, after uint64, limit int) ([]store.Decision, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if err := store.CheckDecisionsLimit(limit); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT seq, data FROM decisions WHERE node = $1 AND seq > $2 ORDER BY seq LIMIT $3`, nodeID, pgInt64(after), limit)
	if err != nil {
		return nil, fmt.Errorf("store: listing decisions: %w", err)
	}
	defer rows.Close()
	var out []store.Decision
	for rows.Next() {
		var seq int64
		var b []byte
		if err := rows.Scan(&seq, &b); err != nil {
			return nil, fmt.Errorf("store: listing decisions: %w", err)
		}
		d, err := record.DecodeDecision(nodeID, uint64(seq), b)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}
