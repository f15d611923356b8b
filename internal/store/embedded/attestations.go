package embedded

import (
	"context"
	"fmt"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	bolt "go.etcd.io/bbolt"
)

// ---- attestations ----

func (s *boltStore) RecordAttestation(ctx context.Context, a store.Attestation) (store.AuditRecord, error) {
	if a.CreatedAt.IsZero() {
		a.CreatedAt = s.now()
	}
	e, err := store.PrepareAttestation(&a)
	if err != nil {
		return store.AuditRecord{}, err
	}
	rec := record.FromAttestation(&a)
	var out store.AuditRecord
	err = s.write(ctx, func(tx *txn) error {
		ab := attBucket(tx)
		if ab.Get([]byte(a.ID)) != nil {
			return logical(fmt.Errorf("attestation %s: %w", a.ID, store.ErrConflict))
		}
		if tx.Bucket(bktNodes).Get([]byte(a.NodeID)) == nil { // a transaction sees its own writes
			return logical(fmt.Errorf("node %s: %w", a.NodeID, store.ErrNotFound))
		}
		head, err := s.auditHeadIn(tx)
		if err != nil {
			return err
		}
		// All checks done: write.
		if err := put(ab, []byte(a.ID), rec); err != nil {
			return err
		}
		if err := s.putLast(tx, a.NodeID, record.Last{ID: a.ID, Policy: a.Policy, Allow: a.Allow, Time: rec.Created, Updated: store.Nanos(s.now())}); err != nil {
			return err
		}
		out, err = appendAudit(tx, head, e)
		return err
	})
	return out, err
}

// attFill is how full a page of attestations is left when it splits.
// attestd's attestation ids begin with their time, so nearly every insert
// is at the end of the bucket, where bbolt's default (half-full pages)
// would leave every page half empty for good; a release rewrites a record
// a few bytes longer, which the rest of the page absorbs.
const attFill = 0.9

// attBucket returns the attestations bucket of a write transaction, set
// to split its pages at attFill.
func attBucket(tx *txn) *bolt.Bucket {
	b := tx.Bucket(bktAtt)
	b.FillPercent = attFill
	return b
}

func (s *boltStore) GetAttestation(ctx context.Context, id string) (store.Attestation, error) {
	var a store.Attestation
	err := s.view(func(tx *bolt.Tx) error {
		r, err := get[record.Attestation](tx.Bucket(bktAtt), []byte(id))
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("attestation %s: %w", id, store.ErrNotFound)
		}
		a = r.Attestation()
		return nil
	})
	return a, err
}

func (s *boltStore) ConsumeRelease(ctx context.Context, id string, now time.Time) (store.Attestation, store.AuditRecord, error) {
	var out store.Attestation
	var rec store.AuditRecord
	t := store.Nanos(now)
	err := s.write(ctx, func(tx *txn) error {
		b := attBucket(tx)
		r, err := get[record.Attestation](b, []byte(id))
		if err != nil {
			return err
		}
		if r == nil {
			return logical(fmt.Errorf("attestation %s: %w", id, store.ErrNotFound))
		}
		if err := store.CheckRelease(id, r.Allow && r.RelExp != 0, r.Released != 0, t >= r.RelExp); err != nil {
			return logical(err)
		}
		r.Released = t
		a := r.Attestation()
		e, err := store.ReleaseEntry(&a, now)
		if err != nil {
			return logical(err)
		}
		head, err := s.auditHeadIn(tx)
		if err != nil {
			return err
		}
		// All checks done: write the mark and its audit record together.
		if err := put(b, []byte(id), r); err != nil {
			return err
		}
		if rec, err = appendAudit(tx, head, e); err != nil {
			return err
		}
		out = a
		return nil
	})
	if err != nil {
		return store.Attestation{}, store.AuditRecord{}, err
	}
	return out, rec, nil
}
