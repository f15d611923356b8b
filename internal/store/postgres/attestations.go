package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	"github.com/jackc/pgx/v5"
)

// ---- attestations ----

const attCols = `id, node, policy, allow, reasons, sandbox_id, guest_public_key, secrets, created, release_expires, released`

func scanAtt(row pgx.Row) (store.Attestation, error) {
	var r record.Attestation
	if err := row.Scan(&r.ID, &r.Node, &r.Policy, &r.Allow, &r.Reasons, &r.Sandbox, &r.GuestPub, &r.Secrets, &r.Created, &r.RelExp, &r.Released); err != nil {
		return store.Attestation{}, err
	}
	return r.Attestation(), nil
}

func (s *pgStore) RecordAttestation(ctx context.Context, a store.Attestation) (store.AuditRecord, error) {
	if err := s.check(); err != nil {
		return store.AuditRecord{}, err
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = s.now()
	}
	e, err := store.PrepareAttestation(&a)
	if err != nil {
		return store.AuditRecord{}, err
	}
	r := record.FromAttestation(&a)
	op := &pgAuditOp{att: &r, entry: e}
	if err := s.submit(ctx, op); err != nil {
		return store.AuditRecord{}, err
	}
	return op.rec, op.err
}

func (s *pgStore) GetAttestation(ctx context.Context, id string) (store.Attestation, error) {
	if err := s.check(); err != nil {
		return store.Attestation{}, err
	}
	a, err := scanAtt(s.pool.QueryRow(ctx, `SELECT `+attCols+` FROM attestations WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Attestation{}, fmt.Errorf("attestation %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Attestation{}, fmt.Errorf("store: reading attestation %s: %w", id, err)
	}
	return a, nil
}

func (s *pgStore) ConsumeRelease(ctx context.Context, id string, now time.Time) (store.Attestation, store.AuditRecord, error) {
	if err := s.check(); err != nil {
		return store.Attestation{}, store.AuditRecord{}, err
	}
	if now.IsZero() {
		return store.Attestation{}, store.AuditRecord{}, fmt.Errorf("release of attestation %s needs a time: %w", id, store.ErrInvalid)
	}
	// The audit batcher consumes the window and appends the record in the
	// transaction that holds the audit head lock.
	op := &pgAuditOp{release: &pgRelease{id: id, now: now}}
	if err := s.submit(ctx, op); err != nil {
		return store.Attestation{}, store.AuditRecord{}, err
	}
	if op.err != nil {
		return store.Attestation{}, store.AuditRecord{}, op.err
	}
	return op.release.att, op.rec, nil
}

// consumeReleaseIn consumes op's release window in tx and sets op.entry to
// its audit record, or sets op.err (nothing written) when the window is not
// open. It returns only the errors that fail the transaction.
func (s *pgStore) consumeReleaseIn(ctx context.Context, tx pgx.Tx, op *pgAuditOp) error {
	rel := op.release
	t := store.Nanos(rel.now)
	a, err := scanAtt(tx.QueryRow(ctx, `SELECT `+attCols+` FROM attestations WHERE id = $1 FOR UPDATE`, rel.id))
	if errors.Is(err, pgx.ErrNoRows) {
		op.err = fmt.Errorf("attestation %s: %w", rel.id, store.ErrNotFound)
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: reading attestation %s: %w", rel.id, err)
	}
	if err := store.CheckRelease(rel.id, a.Allow && !a.ReleaseExpires.IsZero(), !a.ReleasedAt.IsZero(), t >= store.Nanos(a.ReleaseExpires)); err != nil {
		op.err = err
		return nil
	}
	a.ReleasedAt = store.FromNanos(t)
	e, err := store.ReleaseEntry(&a, rel.now)
	if err != nil {
		op.err = err
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE attestations SET released = $2 WHERE id = $1`, rel.id, t); err != nil {
		return fmt.Errorf("store: consuming release of %s: %w", rel.id, err)
	}
	rel.att, op.entry = a, e
	return nil
}
