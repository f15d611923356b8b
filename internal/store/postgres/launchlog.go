package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/jackc/pgx/v5"
)

// ---- PostgreSQL ----

// pgInt64 stores a uint64 the TPM reported in a bigint column, saturating
// (a TPM clock of 2^63 ms is 292 million years).
func pgInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

func (s *pgStore) ReadLaunchPrefix(ctx context.Context, nodeID string, at uint64, sandboxID string) (store.PrefixView, error) {
	if err := s.check(); err != nil {
		return store.PrefixView{}, err
	}
	var (
		out                    store.PrefixView
		reset, restart         int64
		clock, events, updated int64
		pcrAt                  []byte
		nums                   []int64
		digests, pcrs          [][]byte
		ended                  []bool
		p                      = &out.Prefix
		atArg                  = pgInt64(at)
	)
	// One statement: one snapshot.
	err := s.pool.QueryRow(ctx, `SELECT p.reset_count, p.restart_count, p.clock, p.events, p.pcr, p.updated,
		(SELECT r.pcr FROM launch_records r WHERE r.node = p.node AND r.recnum = $2 - 1),
		ARRAY(SELECT r.recnum FROM launch_records r WHERE r.node = p.node AND r.sandbox_id = $3 ORDER BY r.recnum),
		ARRAY(SELECT r.digest FROM launch_records r WHERE r.node = p.node AND r.sandbox_id = $3 ORDER BY r.recnum),
		ARRAY(SELECT r.pcr FROM launch_records r WHERE r.node = p.node AND r.sandbox_id = $3 ORDER BY r.recnum),
		ARRAY(SELECT r.ended FROM launch_records r WHERE r.node = p.node AND r.sandbox_id = $3 ORDER BY r.recnum)
		FROM launch_prefix p WHERE p.node = $1`, nodeID, atArg, sandboxID).
		Scan(&reset, &restart, &clock, &events, &p.PCR, &updated, &pcrAt, &nums, &digests, &pcrs, &ended)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.PrefixView{}, fmt.Errorf("launch prefix of node %s: %w", nodeID, store.ErrNotFound)
	}
	if err != nil {
		return store.PrefixView{}, fmt.Errorf("store: reading launch prefix of node %s: %w", nodeID, err)
	}
	p.NodeID, p.ResetCount, p.RestartCount = nodeID, uint32(reset), uint32(restart)
	p.Clock, p.Events, p.UpdatedAt = uint64(clock), uint64(events), store.FromNanos(updated)
	switch {
	case at == 0:
		out.PCRAt = make([]byte, store.PrefixDigestSize)
	case at == p.Events:
		out.PCRAt = bytes.Clone(p.PCR)
	case at < p.Events:
		out.PCRAt = pcrAt
	}
	if len(nums) != len(digests) || len(nums) != len(pcrs) || len(nums) != len(ended) {
		return store.PrefixView{}, fmt.Errorf("store: launch records of node %s changed while read", nodeID)
	}
	if sandboxID != "" {
		for i := range nums {
			out.Sandbox = append(out.Sandbox, store.PrefixRecord{RecNum: uint64(nums[i]), SandboxID: sandboxID, Digest: digests[i], PCR: pcrs[i], End: ended[i]})
		}
	}
	return out, nil
}

func (s *pgStore) AdvanceLaunchPrefix(ctx context.Context, p store.LaunchPrefix, recs []store.PrefixRecord) (store.LaunchPrefix, error) {
	if err := s.check(); err != nil {
		return store.LaunchPrefix{}, err
	}
	if err := store.ValidatePrefix(&p, recs); err != nil {
		return store.LaunchPrefix{}, err
	}
	var out store.LaunchPrefix
	// Two first advances of one node race to insert its prefix row: the
	// loser's transaction fails on the primary key and runs again, and then
	// finds the row (locked FOR UPDATE from then on).
	for attempt := 0; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var one int
			err := tx.QueryRow(ctx, `SELECT 1 FROM nodes WHERE id = $1 FOR KEY SHARE`, p.NodeID).Scan(&one)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("node %s: %w", p.NodeID, store.ErrNotFound)
			}
			if err != nil {
				return fmt.Errorf("store: reading node %s: %w", p.NodeID, err)
			}
			var (
				old                           *store.LaunchPrefix
				reset, restart, clock, events int64
				updated                       int64
				pcr                           []byte
			)
			err = tx.QueryRow(ctx, `SELECT reset_count, restart_count, clock, events, pcr, updated FROM launch_prefix WHERE node = $1 FOR UPDATE`, p.NodeID).
				Scan(&reset, &restart, &clock, &events, &pcr, &updated)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
			case err != nil:
				return fmt.Errorf("store: reading launch prefix of node %s: %w", p.NodeID, err)
			default:
				old = &store.LaunchPrefix{NodeID: p.NodeID, ResetCount: uint32(reset), RestartCount: uint32(restart), Clock: uint64(clock),
					Events: uint64(events), PCR: pcr, UpdatedAt: store.FromNanos(updated)}
			}
			replace, add, err := store.AdvancePlan(old, &p, recs)
			if err != nil {
				if old != nil {
					out = *old
				}
				return err
			}
			if !replace && len(add) == 0 {
				out = *old
				return nil
			}
			if replace {
				if _, err := tx.Exec(ctx, `DELETE FROM launch_records WHERE node = $1`, p.NodeID); err != nil {
					return fmt.Errorf("store: replacing launch records of node %s: %w", p.NodeID, err)
				}
			}
			nums := make([]int64, len(add))
			ids := make([]string, len(add))
			digests := make([][]byte, len(add))
			pcrs := make([][]byte, len(add))
			ended := make([]bool, len(add))
			for i := range add {
				nums[i], ids[i], digests[i], pcrs[i], ended[i] = int64(add[i].RecNum), add[i].SandboxID, add[i].Digest, add[i].PCR, add[i].End
			}
			if _, err := tx.Exec(ctx, `INSERT INTO launch_records (node, recnum, sandbox_id, digest, pcr, ended)
				SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bytea[], $5::bytea[], $6::boolean[])`, p.NodeID, nums, ids, digests, pcrs, ended); err != nil {
				return fmt.Errorf("store: adding launch records of node %s: %w", p.NodeID, err)
			}
			np := p
			np.UpdatedAt = store.FromNanos(store.Nanos(s.now()))
			if old != nil && !replace && old.Clock > np.Clock {
				np.Clock = old.Clock
			}
			q := `UPDATE launch_prefix SET reset_count = $2, restart_count = $3, clock = $4, events = $5, pcr = $6, updated = $7 WHERE node = $1`
			if old == nil { // a concurrent first insert fails this one on the key
				q = `INSERT INTO launch_prefix (node, reset_count, restart_count, clock, events, pcr, updated) VALUES ($1, $2, $3, $4, $5, $6, $7)`
			}
			if _, err := tx.Exec(ctx, q, np.NodeID, int64(np.ResetCount), int64(np.RestartCount), pgInt64(np.Clock), pgInt64(np.Events), np.PCR, store.Nanos(np.UpdatedAt)); err != nil {
				return fmt.Errorf("store: writing launch prefix of node %s: %w", p.NodeID, err)
			}
			out = store.ClonePrefix(np)
			return nil
		})
		if err != nil && isUnique(err) && attempt < 3 {
			continue
		}
		return out, err
	}
}
