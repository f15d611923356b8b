package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// LaunchPrefix is the part of a node's launch event log that attestd has
// verified (docs/eventlog.md "Incremental logs"): its first Events records
// replay, from zero, to PCR, a launch PCR value that a quote by the node's
// AK showed, in the TPM boot cycle named by that quote's ResetCount and
// RestartCount. A host then sends only the records after the prefix.
//
// The TPM obfuscates both counters in quotes by keys outside the
// endorsement hierarchy (the AK is the owner's), with a mask fixed per key:
// they are compared for equality only, and nothing orders boot cycles
// (Clock, the TPM's powered time in milliseconds, may go back after a
// disorderly shutdown: it is kept for the record, not compared).
type LaunchPrefix struct {
	NodeID       string
	ResetCount   uint32
	RestartCount uint32
	Clock        uint64
	Events       uint64
	PCR          []byte // SHA-256 launch PCR value after Events records
	UpdatedAt    time.Time
}

// SameBoot reports whether a quote with these counters was taken in the
// prefix's TPM boot cycle: no reset (reboot) or restart since, so the
// launch PCR still extends from PCR.
func (p *LaunchPrefix) SameBoot(resetCount, restartCount uint32) bool {
	return p.ResetCount == resetCount && p.RestartCount == restartCount
}

// PrefixRecord is what attestd keeps of one verified record of a node's
// launch log.
type PrefixRecord struct {
	RecNum    uint64
	SandboxID string
	Digest    []byte // SHA-256 of the record's content: what was extended
	PCR       []byte // the launch PCR value after this record
	// End is set for the END record of the sandbox (it ended), clear for
	// its launch event (schema 7; docs/eventlog.md "END records").
	End bool
}

// PrefixView is one consistent read of a node's launch log prefix for an
// attestation (ReadLaunchPrefix).
type PrefixView struct {
	Prefix LaunchPrefix
	// PCRAt is the launch PCR value after the first `at` records: all
	// zeros for 0, Prefix.PCR for Prefix.Events, nil past it.
	PCRAt []byte
	// Sandbox are the prefix's records that name the sandbox asked for,
	// in order: its launch event and, once it ended, its END record.
	Sandbox []PrefixRecord
}

// Limits on what AdvanceLaunchPrefix takes.
const (
	// MaxPrefixSandboxID bounds a record's sandbox id.
	MaxPrefixSandboxID = 256
	prefixDigestSize   = 32 // SHA-256
)

// LaunchLogs stores, per node, the verified prefix of its launch log and
// the digest, PCR value and sandbox id of each record in it.
type LaunchLogs interface {
	// ReadLaunchPrefix returns, from one snapshot, node's prefix, the PCR
	// value after its first at records and its records for sandboxID
	// (none for ""). ErrNotFound when attestd holds no prefix for node.
	ReadLaunchPrefix(ctx context.Context, nodeID string, at uint64, sandboxID string) (PrefixView, error)
	// AdvanceLaunchPrefix stores p, whose last records recs (contiguous,
	// ending at record p.Events-1 with p.PCR) were just verified, in one
	// transaction, and returns the prefix as stored after it:
	//   - in the stored prefix's boot cycle (SameBoot), only forward: a p
	//     no longer than the stored prefix changes nothing (a concurrent
	//     attestation got further); else recs must reach back to the
	//     stored prefix's end (ErrConflict on a gap) and agree with it (a
	//     record at its last position must carry its PCR value, else
	//     ErrConflict), and the records after it are added;
	//   - in another boot cycle (or with no prefix stored), p replaces the
	//     stored prefix and all its records, if recs start at record 0
	//     (else ErrConflict). The last writer wins: a quote of an older
	//     boot cycle that arrives late (within its nonce's lifetime) costs
	//     the host one whole log on its next attestation, nothing more.
	// ErrNotFound if the node does not exist; ErrInvalid for malformed
	// input.
	AdvanceLaunchPrefix(ctx context.Context, p LaunchPrefix, recs []PrefixRecord) (LaunchPrefix, error)
}

func validatePrefix(p *LaunchPrefix, recs []PrefixRecord) error {
	if p.NodeID == "" {
		return fmt.Errorf("launch prefix: node id missing: %w", ErrInvalid)
	}
	if len(p.PCR) != prefixDigestSize {
		return fmt.Errorf("launch prefix: PCR value is %d bytes, want %d: %w", len(p.PCR), prefixDigestSize, ErrInvalid)
	}
	if len(recs) == 0 || p.Events > math.MaxInt64 || p.Events != recs[len(recs)-1].RecNum+1 || uint64(len(recs)) > p.Events {
		return fmt.Errorf("launch prefix: %d records do not end at record %d: %w", len(recs), int64(p.Events)-1, ErrInvalid)
	}
	first := p.Events - uint64(len(recs))
	for i := range recs {
		r := &recs[i]
		if r.RecNum != first+uint64(i) {
			return fmt.Errorf("launch prefix: record %d where %d belongs: %w", r.RecNum, first+uint64(i), ErrInvalid)
		}
		if len(r.Digest) != prefixDigestSize || len(r.PCR) != prefixDigestSize {
			return fmt.Errorf("launch prefix: record %d: digest or PCR value not %d bytes: %w", r.RecNum, prefixDigestSize, ErrInvalid)
		}
		if r.SandboxID == "" || len(r.SandboxID) > MaxPrefixSandboxID || bytes.IndexByte([]byte(r.SandboxID), 0) >= 0 {
			return fmt.Errorf("launch prefix: record %d: sandbox id empty, over %d bytes or with a NUL: %w", r.RecNum, MaxPrefixSandboxID, ErrInvalid)
		}
	}
	if !bytes.Equal(recs[len(recs)-1].PCR, p.PCR) {
		return fmt.Errorf("launch prefix: the last record's PCR value is not the prefix's: %w", ErrInvalid)
	}
	return nil
}

// advancePlan decides what AdvanceLaunchPrefix writes given the stored
// prefix (nil: none): replace (drop every stored record first), the
// records to add, the prefix to store (nil: keep the stored one).
func advancePlan(old *LaunchPrefix, p *LaunchPrefix, recs []PrefixRecord) (replace bool, add []PrefixRecord, err error) {
	if old == nil || !old.SameBoot(p.ResetCount, p.RestartCount) {
		if recs[0].RecNum != 0 {
			return false, nil, fmt.Errorf("launch prefix of node %s: a new boot cycle's prefix must start at record 0, not %d: %w", p.NodeID, recs[0].RecNum, ErrConflict)
		}
		return true, recs, nil
	}
	if p.Events <= old.Events {
		return false, nil, nil
	}
	first := recs[0].RecNum
	if first > old.Events {
		return false, nil, fmt.Errorf("launch prefix of node %s: records from %d leave a gap after the %d stored: %w", p.NodeID, first, old.Events, ErrConflict)
	}
	if first < old.Events && !bytes.Equal(recs[old.Events-1-first].PCR, old.PCR) {
		return false, nil, fmt.Errorf("launch prefix of node %s: record %d disagrees with the stored prefix's PCR value: %w", p.NodeID, old.Events-1, ErrConflict)
	}
	return false, recs[old.Events-first:], nil
}

func clonePrefix(p LaunchPrefix) LaunchPrefix {
	p.PCR = bytes.Clone(p.PCR)
	return p
}

// ---- embedded ----

var (
	// bktPrefix holds each node's launch log prefix (prefixRec by node id).
	bktPrefix = []byte("launchprefix")
	// bktPrefixRecs holds a sub-bucket per node: "r" + recnum (8 bytes,
	// big-endian) → digest (32) || PCR (32) || sandbox id, and "s" +
	// sandbox id + NUL + recnum → empty for a launch event, endMark for
	// an END record (schema 3), the index by sandbox.
	bktPrefixRecs = []byte("launchrecords")
)

type prefixRec struct {
	Reset   uint32 `json:"reset"`
	Restart uint32 `json:"restart"`
	Clock   uint64 `json:"clock"`
	Events  uint64 `json:"events"`
	PCR     []byte `json:"pcr"`
	Updated int64  `json:"updated"`
}

func (r *prefixRec) prefix(node string) LaunchPrefix {
	return LaunchPrefix{NodeID: node, ResetCount: r.Reset, RestartCount: r.Restart, Clock: r.Clock, Events: r.Events,
		PCR: r.PCR, UpdatedAt: fromNanos(r.Updated)}
}

// endMark is the sandbox index value of an END record.
var endMark = []byte{'e'}

func recKey(n uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'r'}, n) }

func sandboxKey(id string, n uint64) []byte {
	k := append([]byte{'s'}, id...)
	return binary.BigEndian.AppendUint64(append(k, 0), n)
}

func decodePrefixRecord(n uint64, v []byte) (PrefixRecord, error) {
	if len(v) < 2*prefixDigestSize+1 {
		return PrefixRecord{}, fmt.Errorf("store: corrupt launch record %d (%d bytes)", n, len(v))
	}
	return PrefixRecord{RecNum: n, Digest: bytes.Clone(v[:32]), PCR: bytes.Clone(v[32:64]), SandboxID: string(v[64:])}, nil
}

func (s *embedded) ReadLaunchPrefix(ctx context.Context, nodeID string, at uint64, sandboxID string) (PrefixView, error) {
	var out PrefixView
	err := s.view(func(tx *bolt.Tx) error {
		r, err := get[prefixRec](tx.Bucket(bktPrefix), []byte(nodeID))
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("launch prefix of node %s: %w", nodeID, ErrNotFound)
		}
		out.Prefix = clonePrefix(r.prefix(nodeID))
		recs := tx.Bucket(bktPrefixRecs).Bucket([]byte(nodeID))
		switch {
		case at == 0:
			out.PCRAt = make([]byte, prefixDigestSize)
		case at == r.Events:
			out.PCRAt = bytes.Clone(r.PCR)
		case at < r.Events && recs != nil:
			pr, err := decodePrefixRecord(at-1, recs.Get(recKey(at-1)))
			if err != nil {
				return err
			}
			out.PCRAt = pr.PCR
		}
		if sandboxID == "" || recs == nil {
			return nil
		}
		pre := append(append([]byte{'s'}, sandboxID...), 0)
		c := recs.Cursor()
		for k, v := c.Seek(pre); k != nil && bytes.HasPrefix(k, pre) && len(k) == len(pre)+8; k, v = c.Next() {
			n := binary.BigEndian.Uint64(k[len(pre):])
			pr, err := decodePrefixRecord(n, recs.Get(recKey(n)))
			if err != nil {
				return err
			}
			pr.End = bytes.Equal(v, endMark)
			out.Sandbox = append(out.Sandbox, pr)
		}
		return nil
	})
	return out, err
}

func (s *embedded) AdvanceLaunchPrefix(ctx context.Context, p LaunchPrefix, recs []PrefixRecord) (LaunchPrefix, error) {
	if err := validatePrefix(&p, recs); err != nil {
		return LaunchPrefix{}, err
	}
	var out LaunchPrefix
	err := s.write(ctx, func(tx *txn) error {
		if tx.Bucket(bktNodes).Get([]byte(p.NodeID)) == nil {
			return logical(fmt.Errorf("node %s: %w", p.NodeID, ErrNotFound))
		}
		hb := tx.Bucket(bktPrefix)
		old, err := get[prefixRec](hb, []byte(p.NodeID))
		if err != nil {
			return logical(err)
		}
		var oldp *LaunchPrefix
		if old != nil {
			op := old.prefix(p.NodeID)
			oldp = &op
		}
		replace, add, err := advancePlan(oldp, &p, recs)
		if err != nil {
			if oldp != nil {
				out = clonePrefix(*oldp)
			}
			return logical(err)
		}
		if !replace && len(add) == 0 {
			out = clonePrefix(*oldp)
			return nil
		}
		rb := tx.Bucket(bktPrefixRecs)
		if replace && rb.Bucket([]byte(p.NodeID)) != nil {
			if err := rb.DeleteBucket([]byte(p.NodeID)); err != nil {
				return err
			}
		}
		nb, err := rb.CreateBucketIfNotExists([]byte(p.NodeID))
		if err != nil {
			return err
		}
		for i := range add {
			r := &add[i]
			v := make([]byte, 0, 64+len(r.SandboxID))
			v = append(append(append(v, r.Digest...), r.PCR...), r.SandboxID...)
			if err := nb.Put(recKey(r.RecNum), v); err != nil {
				return err
			}
			var mark []byte
			if r.End {
				mark = endMark
			}
			if err := nb.Put(sandboxKey(r.SandboxID, r.RecNum), mark); err != nil {
				return err
			}
		}
		np := prefixRec{Reset: p.ResetCount, Restart: p.RestartCount, Clock: p.Clock, Events: p.Events, PCR: p.PCR, Updated: nanos(s.now())}
		if old != nil && !replace && old.Clock > np.Clock {
			np.Clock = old.Clock
		}
		out = clonePrefix(np.prefix(p.NodeID))
		return put(hb, []byte(p.NodeID), np)
	})
	return out, err
}

// deletePrefix removes node id's launch log prefix and records in tx.
func deletePrefix(tx *txn, id string) error {
	if err := tx.Bucket(bktPrefix).Delete([]byte(id)); err != nil {
		return err
	}
	if tx.Bucket(bktPrefixRecs).Bucket([]byte(id)) == nil {
		return nil
	}
	return tx.Bucket(bktPrefixRecs).DeleteBucket([]byte(id))
}

// ---- PostgreSQL ----

// pgInt64 stores a uint64 the TPM reported in a bigint column, saturating
// (a TPM clock of 2^63 ms is 292 million years).
func pgInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

func (s *pgStore) ReadLaunchPrefix(ctx context.Context, nodeID string, at uint64, sandboxID string) (PrefixView, error) {
	if err := s.check(); err != nil {
		return PrefixView{}, err
	}
	var (
		out                    PrefixView
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
		return PrefixView{}, fmt.Errorf("launch prefix of node %s: %w", nodeID, ErrNotFound)
	}
	if err != nil {
		return PrefixView{}, fmt.Errorf("store: reading launch prefix of node %s: %w", nodeID, err)
	}
	p.NodeID, p.ResetCount, p.RestartCount = nodeID, uint32(reset), uint32(restart)
	p.Clock, p.Events, p.UpdatedAt = uint64(clock), uint64(events), fromNanos(updated)
	switch {
	case at == 0:
		out.PCRAt = make([]byte, prefixDigestSize)
	case at == p.Events:
		out.PCRAt = bytes.Clone(p.PCR)
	case at < p.Events:
		out.PCRAt = pcrAt
	}
	if len(nums) != len(digests) || len(nums) != len(pcrs) || len(nums) != len(ended) {
		return PrefixView{}, fmt.Errorf("store: launch records of node %s changed while read", nodeID)
	}
	if sandboxID != "" {
		for i := range nums {
			out.Sandbox = append(out.Sandbox, PrefixRecord{RecNum: uint64(nums[i]), SandboxID: sandboxID, Digest: digests[i], PCR: pcrs[i], End: ended[i]})
		}
	}
	return out, nil
}

func (s *pgStore) AdvanceLaunchPrefix(ctx context.Context, p LaunchPrefix, recs []PrefixRecord) (LaunchPrefix, error) {
	if err := s.check(); err != nil {
		return LaunchPrefix{}, err
	}
	if err := validatePrefix(&p, recs); err != nil {
		return LaunchPrefix{}, err
	}
	var out LaunchPrefix
	// Two first advances of one node race to insert its prefix row: the
	// loser's transaction fails on the primary key and runs again, and then
	// finds the row (locked FOR UPDATE from then on).
	for attempt := 0; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var one int
			err := tx.QueryRow(ctx, `SELECT 1 FROM nodes WHERE id = $1 FOR KEY SHARE`, p.NodeID).Scan(&one)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("node %s: %w", p.NodeID, ErrNotFound)
			}
			if err != nil {
				return fmt.Errorf("store: reading node %s: %w", p.NodeID, err)
			}
			var (
				old                           *LaunchPrefix
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
				old = &LaunchPrefix{NodeID: p.NodeID, ResetCount: uint32(reset), RestartCount: uint32(restart), Clock: uint64(clock),
					Events: uint64(events), PCR: pcr, UpdatedAt: fromNanos(updated)}
			}
			replace, add, err := advancePlan(old, &p, recs)
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
			np.UpdatedAt = fromNanos(nanos(s.now()))
			if old != nil && !replace && old.Clock > np.Clock {
				np.Clock = old.Clock
			}
			q := `UPDATE launch_prefix SET reset_count = $2, restart_count = $3, clock = $4, events = $5, pcr = $6, updated = $7 WHERE node = $1`
			if old == nil { // a concurrent first insert fails this one on the key
				q = `INSERT INTO launch_prefix (node, reset_count, restart_count, clock, events, pcr, updated) VALUES ($1, $2, $3, $4, $5, $6, $7)`
			}
			if _, err := tx.Exec(ctx, q, np.NodeID, int64(np.ResetCount), int64(np.RestartCount), pgInt64(np.Clock), pgInt64(np.Events), np.PCR, nanos(np.UpdatedAt)); err != nil {
				return fmt.Errorf("store: writing launch prefix of node %s: %w", p.NodeID, err)
			}
			out = clonePrefix(np)
			return nil
		})
		if err != nil && isUnique(err) && attempt < 3 {
			continue
		}
		return out, err
	}
}

// ---- classified ----

func (f faultStore) ReadLaunchPrefix(ctx context.Context, nodeID string, at uint64, sandboxID string) (PrefixView, error) {
	v, err := f.s.ReadLaunchPrefix(ctx, nodeID, at, sandboxID)
	return v, Unavailable(err)
}

func (f faultStore) AdvanceLaunchPrefix(ctx context.Context, p LaunchPrefix, recs []PrefixRecord) (LaunchPrefix, error) {
	v, err := f.s.AdvanceLaunchPrefix(ctx, p, recs)
	return v, Unavailable(err)
}
