package postgres

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/jackc/pgx/v5"
)

// ---- nodes ----

const nodeCols = `id, ek_public, ek_cert, ak_public, ak_name, state, challenge_hash, challenge_expires, last_attestation, last_policy, last_allow, last_time, created, updated`

func scanNode(row pgx.Row) (store.Node, error) {
	var r record.Node
	var chExp, lvTime *int64
	var lvID, lvPolicy *string
	var lvAllow *bool
	if err := row.Scan(&r.ID, &r.EKPublic, &r.EKCert, &r.AKPublic, &r.AKName, &r.State, &r.ChHash, &chExp, &lvID, &lvPolicy, &lvAllow, &lvTime, &r.Created, &r.Updated); err != nil {
		return store.Node{}, err
	}
	if chExp != nil {
		r.ChExpires = *chExp
	}
	if lvID != nil {
		r.LVID = *lvID
		if lvPolicy != nil {
			r.LVPolicy = *lvPolicy
		}
		if lvAllow != nil {
			r.LVAllow = *lvAllow
		}
		if lvTime != nil {
			r.LVTime = *lvTime
		}
	}
	return r.Node(), nil
}

// nodeArgs returns the column values of n in nodeCols order.
func nodeArgs(n *store.Node, created, updated int64) []any {
	r := record.FromNode(n)
	var chExp, lvTime *int64
	var lvID, lvPolicy *string
	var lvAllow *bool
	if r.ChHash != nil {
		chExp = &r.ChExpires
	}
	if r.LVID != "" {
		lvID, lvPolicy, lvAllow, lvTime = &r.LVID, &r.LVPolicy, &r.LVAllow, &r.LVTime
	}
	return []any{r.ID, r.EKPublic, r.EKCert, r.AKPublic, r.AKName, string(r.State), r.ChHash, chExp, lvID, lvPolicy, lvAllow, lvTime, created, updated}
}

func (s *pgStore) CreateNode(ctx context.Context, n store.Node) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := store.ValidateNode(&n); err != nil {
		return err
	}
	now := store.Nanos(s.now())
	tag, err := s.pool.Exec(ctx, `INSERT INTO nodes (`+nodeCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) ON CONFLICT (id) DO NOTHING`, nodeArgs(&n, now, now)...)
	if err != nil {
		return fmt.Errorf("store: creating node %s: %w", n.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("node %s: %w", n.ID, store.ErrConflict)
	}
	return nil
}

func (s *pgStore) GetNode(ctx context.Context, id string) (store.Node, error) {
	if err := s.check(); err != nil {
		return store.Node{}, err
	}
	n, err := scanNode(s.pool.QueryRow(ctx, `SELECT `+nodeCols+` FROM nodes WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Node{}, fmt.Errorf("node %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Node{}, fmt.Errorf("store: reading node %s: %w", id, err)
	}
	return n, nil
}

func (s *pgStore) UpdateNode(ctx context.Context, id string, fn func(*store.Node) error) (store.Node, error) {
	if err := s.check(); err != nil {
		return store.Node{}, err
	}
	var out store.Node
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		old, err := scanNode(tx.QueryRow(ctx, `SELECT `+nodeCols+` FROM nodes WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("node %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("store: reading node %s: %w", id, err)
		}
		n := old
		n.EKPublic = bytes.Clone(old.EKPublic)
		if err := callUpdate(fn, &n); err != nil {
			return err
		}
		if n.ID != old.ID || !bytes.Equal(n.EKPublic, old.EKPublic) {
			return fmt.Errorf("node %s: UpdateNode may not change ID or EKPublic: %w", id, store.ErrInvalid)
		}
		if err := store.ValidateNode(&n); err != nil {
			return err
		}
		args := nodeArgs(&n, store.Nanos(old.CreatedAt), store.Nanos(s.now()))
		if _, err := tx.Exec(ctx, `UPDATE nodes SET (`+nodeCols+`) = ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) WHERE id = $1`, args...); err != nil {
			return fmt.Errorf("store: updating node %s: %w", id, err)
		}
		n.CreatedAt, n.UpdatedAt = store.FromNanos(args[12].(int64)), store.FromNanos(args[13].(int64))
		out = n
		return nil
	})
	return out, err
}

// callUpdate runs an UpdateNode callback, turning a panic into an error.
func callUpdate(fn func(*store.Node) error, n *store.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store: node update panicked: %v", r)
		}
	}()
	return fn(n)
}

func (s *pgStore) ListNodes(ctx context.Context) ([]store.Node, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+nodeCols+` FROM nodes ORDER BY id COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("store: listing nodes: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Node, error) { return scanNode(r) })
	if err != nil {
		return nil, fmt.Errorf("store: listing nodes: %w", err)
	}
	return out, nil
}

func (s *pgStore) DeleteNode(ctx context.Context, id string) error {
	if err := s.check(); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM nodes WHERE id = $1`, id)
		if err != nil {
			return fmt.Errorf("store: deleting node %s: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("node %s: %w", id, store.ErrNotFound)
		}
		for _, q := range []string{`DELETE FROM launch_prefix WHERE node = $1`, `DELETE FROM launch_records WHERE node = $1`,
			`DELETE FROM sandbox_states WHERE node = $1`, `DELETE FROM decisions WHERE node = $1`} {
			if _, err := tx.Exec(ctx, q, id); err != nil {
				return fmt.Errorf("store: deleting node %s: %w", id, err)
			}
		}
		return nil
	})
}

// ---- nonces ----

// nonceKey is a nonce's row key: its SHA-256, so the table never holds a
// nonce itself and lookups take the same time whatever its value.
func nonceKey(v []byte) []byte {
	sum := sha256.Sum256(v)
	return sum[:]
}

func (s *pgStore) IssueNonce(ctx context.Context, n store.Nonce) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := store.ValidateNonce(&n); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO nonces (hash, node, expires) VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING`, nonceKey(n.Value), n.NodeID, store.Nanos(n.Expires))
	if err != nil {
		return fmt.Errorf("store: issuing nonce: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("nonce: %w", store.ErrConflict)
	}
	// Keep the node's newest (replicas issuing at once may each trim; the
	// bound holds either way).
	_, err = s.pool.Exec(ctx, `DELETE FROM nonces WHERE hash IN (
		SELECT hash FROM nonces WHERE node = $1 ORDER BY expires DESC, hash OFFSET $2)`, n.NodeID, s.perNode)
	if err != nil {
		return fmt.Errorf("store: trimming the node's nonces: %w", err)
	}
	return nil
}

func (s *pgStore) ConsumeNonce(ctx context.Context, value []byte, nodeID string, now time.Time) error {
	if err := s.check(); err != nil {
		return err
	}
	if limits.CheckNonceSize(len(value)) != nil {
		return fmt.Errorf("nonce of %d bytes: %w", len(value), store.ErrNonceUnknown)
	}
	key, t := nonceKey(value), store.Nanos(now)
	// The one atomic step: of concurrent callers, one UPDATE matches.
	tag, err := s.pool.Exec(ctx, `UPDATE nonces SET used = $3 WHERE hash = $1 AND node = $2 AND used IS NULL AND expires > $3`, key, nodeID, t)
	if err != nil {
		return fmt.Errorf("store: consuming nonce: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	// Say why it did not match.
	var node string
	var expires int64
	var used *int64
	err = s.pool.QueryRow(ctx, `SELECT node, expires, used FROM nonces WHERE hash = $1`, key).Scan(&node, &expires, &used)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNonceUnknown
	}
	if err != nil {
		return fmt.Errorf("store: reading nonce: %w", err)
	}
	if err := store.CheckNonce(false, node == nodeID, used != nil, t >= expires); err != nil {
		return err
	}
	return fmt.Errorf("store: nonce neither consumed nor rejected: %w", store.ErrConflict)
}
