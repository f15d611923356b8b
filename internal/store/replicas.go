package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/bulwark-project/bulwark/enclave/vaultstore"
	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// Join, JoinState and its values are the vault's (enclave/vaultstore):
// the vault and the store share them without importing each other.
type (
	Join      = vaultstore.Join
	JoinState = vaultstore.JoinState
)

const (
	JoinPending  = vaultstore.JoinPending
	JoinApproved = vaultstore.JoinApproved
)

// MaxVaultCheck bounds the vault's key-check value.
const MaxVaultCheck = 1 << 10

// Replicas is what attestd replicas sharing one store share about their
// vault: the key-check value of the vault master key, and the join
// requests by which a new replica receives that key.
type Replicas interface {
	// PutVaultCheck stores the vault's key-check value (a known plaintext
	// sealed under the master key, see enclave) if none is stored:
	// ErrConflict if one is (another replica stored it first; read it and
	// compare). ErrInvalid for an empty or oversized value.
	PutVaultCheck(ctx context.Context, check []byte) error
	// VaultCheck returns the stored key-check value; ErrNotFound if none.
	VaultCheck(ctx context.Context) ([]byte, error)

	// CreateJoin stores a pending join request (State and Wrapped are
	// ignored; CreatedAt/UpdatedAt are set by the store). ErrConflict if
	// j.ID exists; ErrInvalid for a missing or oversized field.
	CreateJoin(ctx context.Context, j Join) error
	// GetJoin returns a join request, or ErrNotFound.
	GetJoin(ctx context.Context, id string) (Join, error)
	// ListJoins returns every join request ordered by ID.
	ListJoins(ctx context.Context) ([]Join, error)
	// ApproveJoin stores wrapped as the join's wrapped master key and
	// marks it approved by by, atomically: of concurrent approvals at most
	// one succeeds. ErrNotFound; ErrConflict if it is not pending;
	// ErrInvalid for an empty or oversized wrapped key or approver.
	ApproveJoin(ctx context.Context, id string, wrapped []byte, by string) (Join, error)
	// DeleteJoin removes a join request; ErrNotFound if absent.
	DeleteJoin(ctx context.Context, id string) error
}

func validateJoin(j *Join) error {
	switch {
	case j.ID == "" || len(j.ID) > MaxIDLen || !textOK(j.ID):
		return fmt.Errorf("join id: want 1..%d bytes of text: %w", MaxIDLen, ErrInvalid)
	case j.Node == "" || len(j.Node) > MaxIDLen || !textOK(j.Node):
		return fmt.Errorf("join %s: node name: want 1..%d bytes of text: %w", j.ID, MaxIDLen, ErrInvalid)
	case len(j.PublicKey) == 0 || len(j.PublicKey) > MaxBlob:
		return fmt.Errorf("join %s: public key is %d bytes: want 1..%d: %w", j.ID, len(j.PublicKey), MaxBlob, ErrInvalid)
	}
	j.State, j.Wrapped, j.ApprovedBy = JoinPending, nil, ""
	return nil
}

func validateApproval(id string, wrapped []byte, by string) error {
	switch {
	case len(wrapped) == 0 || len(wrapped) > MaxBlob:
		return fmt.Errorf("join %s: wrapped key is %d bytes: want 1..%d: %w", id, len(wrapped), MaxBlob, ErrInvalid)
	case by == "" || len(by) > MaxNameLen || !textOK(by):
		return fmt.Errorf("join %s: approver: want 1..%d bytes of text: %w", id, MaxNameLen, ErrInvalid)
	}
	return nil
}

func validateVaultCheck(check []byte) error {
	if len(check) == 0 || len(check) > MaxVaultCheck {
		return fmt.Errorf("vault check value is %d bytes: want 1..%d: %w", len(check), MaxVaultCheck, ErrInvalid)
	}
	return nil
}

// ---- embedded ----

var (
	// bktJoins holds replica join requests (joinRec by id). The embedded
	// store serves one replica; it keeps them so that both stores pass one
	// conformance suite.
	bktJoins = []byte("replicajoins")
	// vaultCheckKey holds the vault's key-check value in bktMeta.
	vaultCheckKey = []byte("vaultcheck")
)

type joinRec struct {
	ID         string `json:"id"`
	Node       string `json:"node"`
	PublicKey  []byte `json:"public_key"`
	State      string `json:"state"`
	Wrapped    []byte `json:"wrapped,omitempty"`
	ApprovedBy string `json:"approved_by,omitempty"`
	Created    int64  `json:"created"`
	Updated    int64  `json:"updated"`
}

func (r *joinRec) join() Join {
	return Join{ID: r.ID, Node: r.Node, PublicKey: r.PublicKey, State: JoinState(r.State), Wrapped: r.Wrapped,
		ApprovedBy: r.ApprovedBy, CreatedAt: fromNanos(r.Created), UpdatedAt: fromNanos(r.Updated)}
}

func (s *embedded) PutVaultCheck(ctx context.Context, check []byte) error {
	if err := validateVaultCheck(check); err != nil {
		return err
	}
	return s.write(ctx, func(tx *txn) error {
		m := tx.Bucket(bktMeta)
		if m.Get(vaultCheckKey) != nil {
			return logical(fmt.Errorf("vault check value: %w", ErrConflict))
		}
		return m.Put(vaultCheckKey, append([]byte(nil), check...))
	})
}

func (s *embedded) VaultCheck(ctx context.Context) ([]byte, error) {
	var out []byte
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bktMeta).Get(vaultCheckKey)
		if v == nil {
			return fmt.Errorf("vault check value: %w", ErrNotFound)
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

func (s *embedded) CreateJoin(ctx context.Context, j Join) error {
	if err := validateJoin(&j); err != nil {
		return err
	}
	now := nanos(s.now())
	return s.write(ctx, func(tx *txn) error {
		b := tx.Bucket(bktJoins)
		if b.Get([]byte(j.ID)) != nil {
			return logical(fmt.Errorf("join %s: %w", j.ID, ErrConflict))
		}
		return put(b, []byte(j.ID), joinRec{ID: j.ID, Node: j.Node, PublicKey: j.PublicKey, State: string(JoinPending), Created: now, Updated: now})
	})
}

func (s *embedded) GetJoin(ctx context.Context, id string) (Join, error) {
	var out Join
	err := s.view(func(tx *bolt.Tx) error {
		r, err := get[joinRec](tx.Bucket(bktJoins), []byte(id))
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("join %q: %w", id, ErrNotFound)
		}
		out = r.join()
		return nil
	})
	return out, err
}

func (s *embedded) ListJoins(ctx context.Context) ([]Join, error) {
	var out []Join
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bktJoins).ForEach(func(k, _ []byte) error {
			r, err := get[joinRec](tx.Bucket(bktJoins), k)
			if err != nil {
				return err
			}
			out = append(out, r.join())
			return nil
		})
	})
	return out, err
}

func (s *embedded) ApproveJoin(ctx context.Context, id string, wrapped []byte, by string) (Join, error) {
	if err := validateApproval(id, wrapped, by); err != nil {
		return Join{}, err
	}
	now := nanos(s.now())
	var out Join
	err := s.write(ctx, func(tx *txn) error {
		b := tx.Bucket(bktJoins)
		r, err := get[joinRec](b, []byte(id))
		if err != nil {
			return err
		}
		if r == nil {
			return logical(fmt.Errorf("join %q: %w", id, ErrNotFound))
		}
		if r.State != string(JoinPending) {
			return logical(fmt.Errorf("join %s is %s, not pending: %w", id, r.State, ErrConflict))
		}
		r.State, r.Wrapped, r.ApprovedBy, r.Updated = string(JoinApproved), append([]byte(nil), wrapped...), by, now
		out = r.join()
		return put(b, []byte(id), r)
	})
	if err != nil {
		return Join{}, err
	}
	return out, nil
}

func (s *embedded) DeleteJoin(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *txn) error {
		b := tx.Bucket(bktJoins)
		if b.Get([]byte(id)) == nil {
			return logical(fmt.Errorf("join %q: %w", id, ErrNotFound))
		}
		return b.Delete([]byte(id))
	})
}

// ---- PostgreSQL ----

func (s *pgStore) PutVaultCheck(ctx context.Context, check []byte) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := validateVaultCheck(check); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO vault_check (id, value) VALUES (1, $1) ON CONFLICT DO NOTHING`, check)
	if err != nil {
		return fmt.Errorf("store: writing the vault check value: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("vault check value: %w", ErrConflict)
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
		return nil, fmt.Errorf("vault check value: %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: reading the vault check value: %w", err)
	}
	return v, nil
}

const pgJoinCols = `id, node, public_key, state, wrapped, approved_by, created, updated`

func scanJoin(row pgx.Row) (Join, error) {
	var r joinRec
	err := row.Scan(&r.ID, &r.Node, &r.PublicKey, &r.State, &r.Wrapped, &r.ApprovedBy, &r.Created, &r.Updated)
	return r.join(), err
}

func (s *pgStore) CreateJoin(ctx context.Context, j Join) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := validateJoin(&j); err != nil {
		return err
	}
	now := nanos(s.now())
	tag, err := s.pool.Exec(ctx, `INSERT INTO replica_joins (`+pgJoinCols+`) VALUES ($1, $2, $3, $4, NULL, '', $5, $5)
		ON CONFLICT (id) DO NOTHING`, j.ID, j.Node, j.PublicKey, string(JoinPending), now)
	if err != nil {
		return fmt.Errorf("store: writing join %s: %w", j.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("join %s: %w", j.ID, ErrConflict)
	}
	return nil
}

func (s *pgStore) GetJoin(ctx context.Context, id string) (Join, error) {
	if err := s.check(); err != nil {
		return Join{}, err
	}
	j, err := scanJoin(s.pool.QueryRow(ctx, `SELECT `+pgJoinCols+` FROM replica_joins WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Join{}, fmt.Errorf("join %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Join{}, fmt.Errorf("store: reading join %q: %w", id, err)
	}
	return j, nil
}

func (s *pgStore) ListJoins(ctx context.Context) ([]Join, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+pgJoinCols+` FROM replica_joins ORDER BY id COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("store: listing joins: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Join, error) { return scanJoin(row) })
	if err != nil {
		return nil, fmt.Errorf("store: listing joins: %w", err)
	}
	return out, nil
}

func (s *pgStore) ApproveJoin(ctx context.Context, id string, wrapped []byte, by string) (Join, error) {
	if err := s.check(); err != nil {
		return Join{}, err
	}
	if err := validateApproval(id, wrapped, by); err != nil {
		return Join{}, err
	}
	j, err := scanJoin(s.pool.QueryRow(ctx, `UPDATE replica_joins SET state = $2, wrapped = $3, approved_by = $4, updated = $5
		WHERE id = $1 AND state = $6 RETURNING `+pgJoinCols, id, string(JoinApproved), wrapped, by, nanos(s.now()), string(JoinPending)))
	if errors.Is(err, pgx.ErrNoRows) {
		if _, gerr := s.GetJoin(ctx, id); gerr != nil {
			return Join{}, gerr
		}
		return Join{}, fmt.Errorf("join %s is not pending: %w", id, ErrConflict)
	}
	if err != nil {
		return Join{}, fmt.Errorf("store: approving join %s: %w", id, err)
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
		return fmt.Errorf("join %q: %w", id, ErrNotFound)
	}
	return nil
}

// ---- classified ----

func (f faultStore) PutVaultCheck(ctx context.Context, check []byte) error {
	return Unavailable(f.s.PutVaultCheck(ctx, check))
}

func (f faultStore) VaultCheck(ctx context.Context) ([]byte, error) {
	v, err := f.s.VaultCheck(ctx)
	return v, Unavailable(err)
}

func (f faultStore) CreateJoin(ctx context.Context, j Join) error {
	return Unavailable(f.s.CreateJoin(ctx, j))
}

func (f faultStore) GetJoin(ctx context.Context, id string) (Join, error) {
	j, err := f.s.GetJoin(ctx, id)
	return j, Unavailable(err)
}

func (f faultStore) ListJoins(ctx context.Context) ([]Join, error) {
	j, err := f.s.ListJoins(ctx)
	return j, Unavailable(err)
}

func (f faultStore) ApproveJoin(ctx context.Context, id string, wrapped []byte, by string) (Join, error) {
	j, err := f.s.ApproveJoin(ctx, id, wrapped, by)
	return j, Unavailable(err)
}

func (f faultStore) DeleteJoin(ctx context.Context, id string) error {
	return Unavailable(f.s.DeleteJoin(ctx, id))
}
