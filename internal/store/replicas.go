package store

import (
	"context"
	"fmt"

	"github.com/bulwark-project/bulwark/enclave/vaultstore"
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

// ValidateJoin checks a replica join request before it is stored (ErrInvalid).
func ValidateJoin(j *Join) error {
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

// ValidateApproval checks the wrapped key and approver of an ApproveJoin
// (ErrInvalid).
func ValidateApproval(id string, wrapped []byte, by string) error {
	switch {
	case len(wrapped) == 0 || len(wrapped) > MaxBlob:
		return fmt.Errorf("join %s: wrapped key is %d bytes: want 1..%d: %w", id, len(wrapped), MaxBlob, ErrInvalid)
	case by == "" || len(by) > MaxNameLen || !textOK(by):
		return fmt.Errorf("join %s: approver: want 1..%d bytes of text: %w", id, MaxNameLen, ErrInvalid)
	}
	return nil
}

// ValidateVaultCheck checks a vault key-check value's size (ErrInvalid).
func ValidateVaultCheck(check []byte) error {
	if len(check) == 0 || len(check) > MaxVaultCheck {
		return fmt.Errorf("vault check value is %d bytes: want 1..%d: %w", len(check), MaxVaultCheck, ErrInvalid)
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
