package store

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"time"
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
	PrefixDigestSize   = 32 // SHA-256
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

// ValidatePrefix checks a launch prefix and the records that advance it
// (ErrInvalid), as every backend does before AdvanceLaunchPrefix writes.
func ValidatePrefix(p *LaunchPrefix, recs []PrefixRecord) error {
	if p.NodeID == "" {
		return fmt.Errorf("launch prefix: node id missing: %w", ErrInvalid)
	}
	if len(p.PCR) != PrefixDigestSize {
		return fmt.Errorf("launch prefix: PCR value is %d bytes, want %d: %w", len(p.PCR), PrefixDigestSize, ErrInvalid)
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
		if len(r.Digest) != PrefixDigestSize || len(r.PCR) != PrefixDigestSize {
			return fmt.Errorf("launch prefix: record %d: digest or PCR value not %d bytes: %w", r.RecNum, PrefixDigestSize, ErrInvalid)
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

// AdvancePlan decides what AdvanceLaunchPrefix writes given the stored
// prefix (nil: none): replace (drop every stored record first), the
// records to add, the prefix to store (nil: keep the stored one).
func AdvancePlan(old *LaunchPrefix, p *LaunchPrefix, recs []PrefixRecord) (replace bool, add []PrefixRecord, err error) {
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

// ClonePrefix returns p with its own copy of the PCR value.
func ClonePrefix(p LaunchPrefix) LaunchPrefix {
	p.PCR = bytes.Clone(p.PCR)
	return p
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
