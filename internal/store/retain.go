package store

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"
)

// maxSealSig bounds a seal's signature (an RSA-4096 signature is 512 bytes).
const maxSealSig = 1024

// ValidatePurge checks PurgeSealed's arguments.
func ValidatePurge(seal Seal, limit int) error {
	switch {
	case limit < 1 || limit > MaxPurgeBatch:
		return fmt.Errorf("purge batch %d: want 1..%d: %w", limit, MaxPurgeBatch, ErrInvalid)
	case seal.Seq == 0 || len(seal.Hash) != sha256.Size:
		return fmt.Errorf("audit seal needs a record (seq 1 or more) and a 32-byte hash: %w", ErrInvalid)
	case len(seal.Sig) == 0 || len(seal.Sig) > maxSealSig:
		return fmt.Errorf("audit seal at %d: signature of %d bytes, want 1..%d: %w", seal.Seq, len(seal.Sig), maxSealSig, ErrInvalid)
	}
	return nil
}

// CheckSeal decides whether seal may purge a log whose stored seal is old
// (Seq 0: none), whose head is headSeq, and whose record at seal.Seq has
// hash atSeal (nil: absent). It reports whether seal is new (to be
// stored), or an ErrConflict/ErrInvalid error when it may not purge.
func CheckSeal(seal Seal, old Checkpoint, headSeq uint64, atSeal []byte) (bool, error) {
	switch {
	case seal.Seq < old.Seq:
		return false, fmt.Errorf("audit log already purged through %d, after the seal at %d: %w", old.Seq, seal.Seq, ErrConflict)
	case seal.Seq == old.Seq:
		if !bytes.Equal(seal.Hash, old.Hash) {
			return false, fmt.Errorf("audit seal at %d differs from the stored seal there: %w", seal.Seq, ErrConflict)
		}
		return false, nil
	case seal.Seq >= headSeq:
		return false, fmt.Errorf("audit seal at %d is not before the head (%d), which is never purged: %w", seal.Seq, headSeq, ErrConflict)
	case atSeal == nil:
		return false, fmt.Errorf("audit seal at %d names no stored record: %w", seal.Seq, ErrConflict)
	case !bytes.Equal(atSeal, seal.Hash):
		return false, fmt.Errorf("audit seal at %d: the record there has another hash: %w", seal.Seq, ErrConflict)
	}
	return true, nil
}

// RetainOptions configure Retain.
type RetainOptions struct {
	// Signer signs the seals (attestd's token key). Required.
	Signer crypto.Signer
	// Rand for the signatures; nil: crypto/rand.
	Rand io.Reader
	// Batch is the records purged per transaction (default 1000, at most
	// MaxPurgeBatch): a transaction holds the store's write lock (the
	// embedded store's single writer) only for that long.
	Batch int
	// Scan bounds the records examined to find one seal (default 100,000):
	// a round purges at most that many; Retain runs rounds until nothing
	// older than the cutoff is left.
	Scan int
}

// Retain deletes the audit records older than cutoff, and the
// attestations their verdict records name, keeping the rest of the chain
// verifiable. Each round it reads the log from its oldest record and finds
// the longest run of records all older than cutoff (never the head, from
// which the chain goes on), signs a seal at its last record (SignSeal) and
// purges through it with PurgeSealed, Batch records per transaction. It
// stops when nothing is left to purge, or with ctx. A verifier given the
// seal's public key (VerifyOptions.SealKey) then checks what remains from
// the seal on. ErrConflict from a store that another replica purged
// further meanwhile ends the round quietly.
func Retain(ctx context.Context, s Store, cutoff time.Time, o RetainOptions) (Purged, error) {
	if o.Signer == nil {
		return Purged{}, fmt.Errorf("retention needs a signer for its seals: %w", ErrInvalid)
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Batch <= 0 {
		o.Batch = 1000
	}
	o.Batch = min(o.Batch, MaxPurgeBatch)
	if o.Scan <= 0 {
		o.Scan = 100_000
	}
	cut := NormTime(cutoff)
	var total Purged
	// A purge interrupted (a crash, a cancelled context) is finished under
	// its own seal first, if this key signed it: a new seal point may lie
	// before it (a longer retention since), and the store refuses a seal
	// before the stored one.
	if stored, err := s.AuditSeal(ctx); err == nil && VerifySeal(o.Signer.Public(), stored) == nil {
		if _, err := purgeThrough(ctx, s, stored, o.Batch, &total); err != nil {
			return total, err
		}
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return total, fmt.Errorf("retention: reading the seal: %w", err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		cp, ok, err := sealPoint(ctx, s, cut, o.Scan)
		if err != nil || !ok {
			return total, err
		}
		seal, err := SignSeal(o.Rand, o.Signer, cp)
		if err != nil {
			return total, err
		}
		if done, err := purgeThrough(ctx, s, seal, o.Batch, &total); err != nil || !done {
			return total, err
		}
	}
}

// purgeThrough calls PurgeSealed with seal until nothing at or before it
// is left (done), adding what it purged to total. ErrConflict (another
// replica purged further, or the store refuses the seal) ends it quietly,
// not done: the caller stops until its next round.
func purgeThrough(ctx context.Context, s Store, seal Seal, batch int, total *Purged) (done bool, err error) {
	for {
		p, err := s.PurgeSealed(ctx, seal, batch)
		if errors.Is(err, ErrConflict) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("purging the audit log through %d: %w", seal.Seq, err)
		}
		total.Audit += p.Audit
		total.Attestations += p.Attestations
		if !p.More {
			return true, nil
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
	}
}

// sealPoint returns the last record of the longest run, from the oldest
// stored record, of at most scan records all older than cutoff and before
// the head; ok is false when there is none.
func sealPoint(ctx context.Context, s Store, cutoff time.Time, scan int) (Checkpoint, bool, error) {
	head, err := s.AuditHead(ctx)
	if errors.Is(err, ErrNotFound) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("retention: audit head: %w", err)
	}
	var last Checkpoint
	var after uint64
	for seen := 0; seen < scan; {
		recs, err := s.ReadAudit(ctx, after, min(1000, scan-seen))
		if err != nil {
			return Checkpoint{}, false, fmt.Errorf("retention: reading the audit log after %d: %w", after, err)
		}
		for _, r := range recs {
			if r.Seq >= head.Seq || !r.Time.Before(cutoff) || r.Seq <= after {
				return last, last.Seq > 0, nil
			}
			last, after = Checkpoint{Seq: r.Seq, Hash: r.Hash}, r.Seq
		}
		seen += len(recs)
		if len(recs) == 0 {
			break
		}
	}
	return last, last.Seq > 0, nil
}
