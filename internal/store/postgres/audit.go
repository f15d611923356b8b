package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	"github.com/jackc/pgx/v5"
)

// ---- audit ----

func (s *pgStore) AppendAudit(ctx context.Context, e store.AuditEntry) (store.AuditRecord, error) {
	if err := s.check(); err != nil {
		return store.AuditRecord{}, err
	}
	if err := store.ValidateAuditEntry(&e, s.now); err != nil {
		return store.AuditRecord{}, err
	}
	op := &pgAuditOp{entry: e}
	if err := s.submit(ctx, op); err != nil {
		return store.AuditRecord{}, err
	}
	return op.rec, op.err
}

const auditCols = `seq, time, kind, node, subject, details, prev, hash`

func scanAudit(row pgx.Row) (store.AuditRecord, error) {
	var r record.Audit
	var seq int64
	if err := row.Scan(&seq, &r.Time, &r.Kind, &r.Node, &r.Subject, &r.Details, &r.Prev, &r.Hash); err != nil {
		return store.AuditRecord{}, err
	}
	r.Seq = uint64(seq)
	return r.Record(), nil
}

func (s *pgStore) ReadAudit(ctx context.Context, after uint64, limit int) ([]store.AuditRecord, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if limit < 1 || limit > 1000 {
		return nil, fmt.Errorf("audit read limit %d: want 1..1000: %w", limit, store.ErrInvalid)
	}
	q := `SELECT ` + auditCols + ` FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2`
	if after == 0 { // every row, even one whose seq was set to 0 or below
		q = `SELECT ` + auditCols + ` FROM audit WHERE $1::bigint = 0 ORDER BY seq LIMIT $2`
	}
	rows, err := s.pool.Query(ctx, q, int64(after), limit)
	if err != nil {
		return nil, fmt.Errorf("store: reading audit log: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.AuditRecord, error) { return scanAudit(r) })
	if err != nil {
		return nil, fmt.Errorf("store: reading audit log: %w", err)
	}
	return out, nil
}

// AuditHead returns the record audit_head points at. If that record is
// missing or its hash differs from the head's, it reports ErrAuditChain:
// the log was cut or rewritten at its end.
func (s *pgStore) AuditHead(ctx context.Context) (store.AuditRecord, error) {
	if err := s.check(); err != nil {
		return store.AuditRecord{}, err
	}
	var seq int64
	var hash []byte
	if err := s.pool.QueryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &hash); err != nil {
		return store.AuditRecord{}, fmt.Errorf("store: reading audit head: %w", err)
	}
	if seq == 0 {
		return store.AuditRecord{}, fmt.Errorf("audit log is empty: %w", store.ErrNotFound)
	}
	r, err := scanAudit(s.pool.QueryRow(ctx, `SELECT `+auditCols+` FROM audit WHERE seq = $1`, seq))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.AuditRecord{}, &store.ChainError{Position: uint64(seq), Reason: "the head record is missing (records removed from the end)"}
	}
	if err != nil {
		return store.AuditRecord{}, fmt.Errorf("store: reading audit head: %w", err)
	}
	if !bytes.Equal(r.Hash, hash) {
		return store.AuditRecord{}, &store.ChainError{Position: uint64(seq), Seq: r.Seq, Reason: "the head record's hash differs from the recorded head"}
	}
	return r, nil
}

// ---- purge ----

func (s *pgStore) PurgeExpired(ctx context.Context, now time.Time) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	t := store.Nanos(now)
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM nonces WHERE expires <= $1`, t)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		tag, err = tx.Exec(ctx, `UPDATE nodes SET challenge_hash = NULL, challenge_expires = NULL WHERE challenge_hash IS NOT NULL AND challenge_expires <= $1`, t)
		if err != nil {
			return err
		}
		n += tag.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: purging: %w", err)
	}
	return int(n), nil
}

// ---- retention ----

func (s *pgStore) AuditSeal(ctx context.Context) (store.Seal, error) {
	if err := s.check(); err != nil {
		return store.Seal{}, err
	}
	var seq int64
	var out store.Seal
	if err := s.pool.QueryRow(ctx, `SELECT seq, hash, sig FROM audit_seal WHERE id = 1`).Scan(&seq, &out.Hash, &out.Sig); err != nil {
		return store.Seal{}, fmt.Errorf("store: reading audit seal: %w", err)
	}
	if seq == 0 {
		return store.Seal{}, fmt.Errorf("audit log never purged: %w", store.ErrNotFound)
	}
	out.Seq = uint64(seq)
	return out, nil
}

// PurgeSealed locks the audit_seal row (replicas purging at once take
// turns), never the audit head: appends go on meanwhile.
func (s *pgStore) PurgeSealed(ctx context.Context, seal store.Seal, limit int) (store.Purged, error) {
	if err := s.check(); err != nil {
		return store.Purged{}, err
	}
	if err := store.ValidatePurge(seal, limit); err != nil {
		return store.Purged{}, err
	}
	var out store.Purged
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out = store.Purged{}
		var oldSeq, headSeq int64
		var oldHash []byte
		if err := tx.QueryRow(ctx, `SELECT seq, hash FROM audit_seal WHERE id = 1 FOR UPDATE`).Scan(&oldSeq, &oldHash); err != nil {
			return fmt.Errorf("store: locking audit seal: %w", err)
		}
		if err := tx.QueryRow(ctx, `SELECT seq FROM audit_head WHERE id = 1`).Scan(&headSeq); err != nil {
			return fmt.Errorf("store: reading audit head: %w", err)
		}
		var atSeal []byte
		err := tx.QueryRow(ctx, `SELECT hash FROM audit WHERE seq = $1`, int64(seal.Seq)).Scan(&atSeal)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("store: reading audit record %d: %w", seal.Seq, err)
		}
		isNew, err := store.CheckSeal(seal, store.Checkpoint{Seq: uint64(oldSeq), Hash: oldHash}, uint64(headSeq), atSeal)
		if err != nil {
			return err
		}
		if isNew {
			if _, err := tx.Exec(ctx, `UPDATE audit_seal SET seq = $1, hash = $2, sig = $3 WHERE id = 1`, int64(seal.Seq), seal.Hash, seal.Sig); err != nil {
				return fmt.Errorf("store: writing audit seal: %w", err)
			}
		}
		rows, err := tx.Query(ctx, `DELETE FROM audit WHERE seq IN (
			SELECT seq FROM audit WHERE seq <= $1 ORDER BY seq LIMIT $2) RETURNING kind, subject`, int64(seal.Seq), limit)
		if err != nil {
			return fmt.Errorf("store: purging audit records: %w", err)
		}
		var ids []string
		for rows.Next() {
			var kind, subject string
			if err := rows.Scan(&kind, &subject); err != nil {
				rows.Close()
				return fmt.Errorf("store: purging audit records: %w", err)
			}
			out.Audit++
			if store.AuditKind(kind) == store.KindVerdict {
				ids = append(ids, subject)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("store: purging audit records: %w", err)
		}
		if len(ids) > 0 {
			tag, err := tx.Exec(ctx, `DELETE FROM attestations WHERE id = ANY($1)`, ids)
			if err != nil {
				return fmt.Errorf("store: purging attestations: %w", err)
			}
			out.Attestations = int(tag.RowsAffected())
		}
		return tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM audit WHERE seq <= $1)`, int64(seal.Seq)).Scan(&out.More)
	})
	if err != nil {
		return store.Purged{}, err
	}
	return out, nil
}
