package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/internal/gather"
	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	"github.com/jackc/pgx/v5"
)

// pgMaxGroup bounds how many audit appends share one transaction.
const pgMaxGroup = 256

// pgAuditOp is one audit append, with the attestation it records or the
// release window it consumes (if any).
// The batcher groups queued ops into one transaction that takes the audit
// head lock once, so the chain's serialisation costs one commit per group
// instead of one per record.
type pgAuditOp struct {
	att     *record.Attestation // an attestation to record with its verdict record
	release *pgRelease          // a release window to consume (entry is then built in the transaction)
	entry   store.AuditEntry

	rec  store.AuditRecord // result
	err  error             // logical result (ErrConflict, ErrNotFound)
	done chan error        // transport result
}

// pgRelease is a ConsumeRelease in the audit batch.
type pgRelease struct {
	id  string
	now time.Time
	att store.Attestation // result: the attestation as released
}

// submit queues op and waits until its group has committed (or failed).
func (s *pgStore) submit(ctx context.Context, op *pgAuditOp) error {
	op.done = make(chan error, 1)
	s.mu.RLock()
	if s.closed.Load() {
		s.mu.RUnlock()
		return store.ErrClosed
	}
	select {
	case s.ops <- op:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	return <-op.done
}

func (s *pgStore) runBatcher() {
	defer close(s.batcher)
	group := make([]*pgAuditOp, 0, pgMaxGroup)
	for first := range s.ops {
		group = gather.Queued(append(group[:0], first), s.ops, pgMaxGroup)
		err := s.commitGroup(group)
		if err != nil && len(group) > 1 {
			// Something failed the whole transaction: retry each op alone so
			// one bad op does not fail the others.
			s.log.Warn("audit group commit failed; retrying one by one", "ops", len(group), "err", err)
			for _, op := range group {
				op.done <- s.commitGroup([]*pgAuditOp{op})
			}
			continue
		}
		for _, op := range group {
			op.done <- err
		}
	}
}

// commitGroup records the group's attestations, consumes its release
// windows and appends their audit records in one transaction.
func (s *pgStore) commitGroup(group []*pgAuditOp) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, op := range group {
			op.err, op.rec = nil, store.AuditRecord{}
		}
		var seq int64
		var hash []byte
		// The lock that keeps the chain linear across replicas, held to commit.
		if err := tx.QueryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE`).Scan(&seq, &hash); err != nil {
			return fmt.Errorf("store: locking audit head: %w", err)
		}
		// Attestations, pipelined: insert unless it exists or its node does
		// not, and set the node's last verdict, in one statement each.
		var b pgx.Batch
		var atts []*pgAuditOp
		updated := store.Nanos(s.now())
		for _, op := range group {
			if r := op.att; r != nil {
				b.Queue(`WITH ins AS (
					INSERT INTO attestations (`+attCols+`)
					SELECT $1::text, $2::text, $3::text, $4::boolean, $5::text[], $6::text, $7::bytea, $8::text[], $9::bigint, $10::bigint, 0
					WHERE EXISTS (SELECT 1 FROM nodes WHERE id = $2)
					ON CONFLICT (id) DO NOTHING RETURNING node)
				UPDATE nodes SET last_attestation = $1, last_policy = $3, last_allow = $4, last_time = $9, updated = $11
				FROM ins WHERE nodes.id = ins.node`,
					r.ID, r.Node, r.Policy, r.Allow, r.Reasons, r.Sandbox, r.GuestPub, r.Secrets, r.Created, r.RelExp, updated)
				atts = append(atts, op)
			}
		}
		if len(atts) > 0 {
			br := tx.SendBatch(ctx, &b)
			var failed []*pgAuditOp
			for _, op := range atts {
				tag, err := br.Exec()
				if err != nil {
					br.Close()
					return fmt.Errorf("store: recording attestation %s: %w", op.att.ID, err)
				}
				if tag.RowsAffected() == 0 {
					failed = append(failed, op)
				}
			}
			if err := br.Close(); err != nil {
				return fmt.Errorf("store: recording attestations: %w", err)
			}
			for _, op := range failed {
				var exists bool
				if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM attestations WHERE id = $1)`, op.att.ID).Scan(&exists); err != nil {
					return fmt.Errorf("store: recording attestation %s: %w", op.att.ID, err)
				}
				if exists {
					op.err = fmt.Errorf("attestation %s: %w", op.att.ID, store.ErrConflict)
				} else {
					op.err = fmt.Errorf("node %s: %w", op.att.Node, store.ErrNotFound)
				}
			}
		}
		// Release windows, each consumed with its record's entry built from
		// the row as locked; a closed window writes nothing.
		for _, op := range group {
			if op.release != nil {
				if err := s.consumeReleaseIn(ctx, tx, op); err != nil {
					return err
				}
			}
		}
		// Chain the audit records of every op that succeeded.
		var head *store.AuditRecord
		if seq > 0 {
			head = &store.AuditRecord{Seq: uint64(seq), Hash: hash}
		}
		var rows [][]any
		for _, op := range group {
			if op.err != nil {
				continue
			}
			r := store.NextAuditRecord(head, op.entry)
			op.rec, head = r, &op.rec
			rows = append(rows, []any{int64(r.Seq), store.Nanos(r.Time), string(r.Kind), r.NodeID, r.Subject, []byte(r.Details), r.Prev, r.Hash})
		}
		if len(rows) == 0 {
			return nil
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"audit"}, []string{"seq", "time", "kind", "node", "subject", "details", "prev", "hash"}, pgx.CopyFromRows(rows)); err != nil {
			return fmt.Errorf("store: appending %d audit records: %w", len(rows), err)
		}
		if _, err := tx.Exec(ctx, `UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1`, int64(head.Seq), head.Hash); err != nil {
			return fmt.Errorf("store: advancing audit head: %w", err)
		}
		return nil
	})
}
