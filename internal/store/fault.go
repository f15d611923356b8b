package store

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	berrors "go.etcd.io/bbolt/errors"
)

// faultError marks err as a storage fault: errors.Is(err, ErrUnavailable)
// holds, and the message and chain are err's.
type faultError struct{ err error }

func (e *faultError) Error() string        { return e.err.Error() }
func (e *faultError) Unwrap() error        { return e.err }
func (e *faultError) Is(target error) bool { return target == ErrUnavailable }

// Unavailable returns err marked with ErrUnavailable when it is a storage
// fault rather than an answer about the request, and err unchanged
// otherwise (nil stays nil). Faults are:
//
//   - the file system refusing I/O: ENOSPC, EDQUOT, EIO, EROFS;
//   - bbolt's database-not-open;
//   - PostgreSQL not reachable: a failed connect (*pgconn.ConnectError),
//     a network error or a connection closed mid-call (io.EOF,
//     io.ErrUnexpectedEOF), or a request pgx never sent
//     (pgconn.SafeToRetry);
//   - PostgreSQL refusing for lack of resources or going away: SQLSTATE
//     classes 08 (connection exception), 53 (insufficient resources: disk
//     full, out of memory, too many connections), 58 (system error: I/O),
//     and 57P01-57P03 (shutdown, crash, starting up).
//
// The request's own cancellation or deadline is never a fault: it is left
// as it is, for the caller to report as such.
func Unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if isFault(err) {
		return &faultError{err}
	}
	return err
}

func isFault(err error) bool {
	for _, e := range []error{syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, syscall.EROFS, berrors.ErrDatabaseNotOpen, io.EOF, io.ErrUnexpectedEOF} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true // whatever the server said, no connection to run on
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case len(pe.Code) == 5 && (pe.Code[:2] == "08" || pe.Code[:2] == "53" || pe.Code[:2] == "58"):
			return true
		case pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03":
			return true
		}
		return false // the server answered: a statement-level error
	}
	if pgconn.SafeToRetry(err) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// faultStore classifies every error of the Store it wraps with Unavailable.
type faultStore struct{ s Store }

var _ Store = faultStore{}

// Classified wraps s so its errors are classified; the Open functions
// return their stores through it.
func Classified(s Store) Store { return faultStore{s} }

// Unclassified returns the implementation under a classified Store.
func Unclassified(s Store) Store {
	if f, ok := s.(faultStore); ok {
		return f.s
	}
	return s
}

func (f faultStore) CreateNode(ctx context.Context, n Node) error {
	return Unavailable(f.s.CreateNode(ctx, n))
}

func (f faultStore) GetNode(ctx context.Context, id string) (Node, error) {
	n, err := f.s.GetNode(ctx, id)
	return n, Unavailable(err)
}

func (f faultStore) UpdateNode(ctx context.Context, id string, fn func(*Node) error) (Node, error) {
	n, err := f.s.UpdateNode(ctx, id, fn)
	return n, Unavailable(err)
}

func (f faultStore) ListNodes(ctx context.Context) ([]Node, error) {
	n, err := f.s.ListNodes(ctx)
	return n, Unavailable(err)
}

func (f faultStore) DeleteNode(ctx context.Context, id string) error {
	return Unavailable(f.s.DeleteNode(ctx, id))
}

func (f faultStore) IssueNonce(ctx context.Context, n Nonce) error {
	return Unavailable(f.s.IssueNonce(ctx, n))
}

func (f faultStore) ConsumeNonce(ctx context.Context, value []byte, nodeID string, now time.Time) error {
	return Unavailable(f.s.ConsumeNonce(ctx, value, nodeID, now))
}

func (f faultStore) RecordAttestation(ctx context.Context, a Attestation) (AuditRecord, error) {
	r, err := f.s.RecordAttestation(ctx, a)
	return r, Unavailable(err)
}

func (f faultStore) GetAttestation(ctx context.Context, id string) (Attestation, error) {
	a, err := f.s.GetAttestation(ctx, id)
	return a, Unavailable(err)
}

func (f faultStore) ConsumeRelease(ctx context.Context, id string, now time.Time) (Attestation, AuditRecord, error) {
	a, r, err := f.s.ConsumeRelease(ctx, id, now)
	return a, r, Unavailable(err)
}

func (f faultStore) PutSecret(ctx context.Context, sec Secret, prevVersion uint64) error {
	return Unavailable(f.s.PutSecret(ctx, sec, prevVersion))
}

func (f faultStore) GetSecret(ctx context.Context, name string) (Secret, error) {
	s, err := f.s.GetSecret(ctx, name)
	return s, Unavailable(err)
}

func (f faultStore) ListSecrets(ctx context.Context) ([]SecretMeta, error) {
	m, err := f.s.ListSecrets(ctx)
	return m, Unavailable(err)
}

func (f faultStore) DeleteSecret(ctx context.Context, name string) error {
	return Unavailable(f.s.DeleteSecret(ctx, name))
}

func (f faultStore) AppendAudit(ctx context.Context, e AuditEntry) (AuditRecord, error) {
	r, err := f.s.AppendAudit(ctx, e)
	return r, Unavailable(err)
}

func (f faultStore) ReadAudit(ctx context.Context, after uint64, limit int) ([]AuditRecord, error) {
	r, err := f.s.ReadAudit(ctx, after, limit)
	return r, Unavailable(err)
}

func (f faultStore) AuditHead(ctx context.Context) (AuditRecord, error) {
	r, err := f.s.AuditHead(ctx)
	return r, Unavailable(err)
}

func (f faultStore) AuditSeal(ctx context.Context) (Seal, error) {
	r, err := f.s.AuditSeal(ctx)
	return r, Unavailable(err)
}

func (f faultStore) PurgeSealed(ctx context.Context, seal Seal, limit int) (Purged, error) {
	p, err := f.s.PurgeSealed(ctx, seal, limit)
	return p, Unavailable(err)
}

func (f faultStore) PurgeExpired(ctx context.Context, now time.Time) (int, error) {
	n, err := f.s.PurgeExpired(ctx, now)
	return n, Unavailable(err)
}

func (f faultStore) Close() error { return Unavailable(f.s.Close()) }
