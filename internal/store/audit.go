package store

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// auditDomain starts the canonical encoding of every audit record, so an
// audit hash can never be confused with a hash of anything else.
const auditDomain = "bulwark-audit-v1\x00"

// Canonical returns the canonical encoding of r that Hash covers: the domain
// string "bulwark-audit-v1\x00", Seq (uint64 big endian), Time (int64 Unix
// nanoseconds, big endian, UTC with microsecond precision; 0 for the zero
// time), then Kind,
// NodeID, Subject, Details and Prev, each as a uint32 big-endian length
// followed by the bytes. Hash itself is not included.
func (r *AuditRecord) Canonical() []byte {
	b := make([]byte, 0, len(auditDomain)+16+5*4+len(r.Kind)+len(r.NodeID)+len(r.Subject)+len(r.Details)+len(r.Prev))
	b = append(b, auditDomain...)
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(Nanos(r.Time)))
	for _, f := range [][]byte{[]byte(r.Kind), []byte(r.NodeID), []byte(r.Subject), r.Details, r.Prev} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// ComputeHash returns SHA-256(r.Canonical()).
func (r *AuditRecord) ComputeHash() []byte {
	sum := sha256.Sum256(r.Canonical())
	return sum[:]
}

// genesisPrev is the Prev of record 1.
var genesisPrev = make([]byte, sha256.Size)

// GenesisPrev returns the Prev of record 1 (all zero), a copy.
func GenesisPrev() []byte { return bytes.Clone(genesisPrev) }

// NextAuditRecord builds the record that follows head (nil: the first) for e.
// e must have been validated and normalised (ValidateAuditEntry).
func NextAuditRecord(head *AuditRecord, e AuditEntry) AuditRecord {
	r := AuditRecord{Seq: 1, Time: e.Time, Kind: e.Kind, NodeID: e.NodeID, Subject: e.Subject, Details: e.Details, Prev: genesisPrev}
	if head != nil {
		r.Seq = head.Seq + 1
		r.Prev = head.Hash
	}
	r.Hash = r.ComputeHash()
	return r
}

// ValidateAuditEntry checks e and normalises its time (now when zero).
func ValidateAuditEntry(e *AuditEntry, now func() time.Time) error {
	switch e.Kind {
	case KindVerdict, KindRelease, KindEnroll, KindAdmin:
	default:
		return fmt.Errorf("audit kind %q is not one of verdict, release, enroll, admin: %w", e.Kind, ErrInvalid)
	}
	if len(e.Details) == 0 {
		e.Details = json.RawMessage("{}")
	}
	if len(e.Details) > MaxAuditDetails {
		return fmt.Errorf("audit details are %d bytes, the limit is %d: %w", len(e.Details), MaxAuditDetails, ErrInvalid)
	}
	if len(e.NodeID) > MaxNameLen || len(e.Subject) > 1024 || !textOK(e.NodeID, e.Subject) {
		return fmt.Errorf("audit node id or subject too long or not UTF-8 without NUL: %w", ErrInvalid)
	}
	if d := bytes.TrimLeft(e.Details, " \t\r\n"); len(d) == 0 || d[0] != '{' || !json.Valid(d) {
		return fmt.Errorf("audit details must be a JSON object: %w", ErrInvalid)
	}
	if e.Time.IsZero() {
		e.Time = now()
	}
	e.Time = NormTime(e.Time)
	if !e.Time.After(time.Unix(0, 0)) || e.Time.Year() > 2200 {
		return fmt.Errorf("audit time %v is outside 1970..2200: %w", e.Time, ErrInvalid)
	}
	return nil
}

// Checkpoint names one point of the audit chain. attestd may sign
// Checkpoint.SigningBytes of the head with its key and keep the signature
// elsewhere (the anchor hook); VerifyAudit given trusted checkpoints then
// also detects a chain truncated or rewritten from its start.
type Checkpoint struct {
	Seq  uint64
	Hash []byte
}

// SigningBytes is the canonical message to sign for c.
func (c Checkpoint) SigningBytes() []byte {
	b := append([]byte("bulwark-audit-checkpoint-v1\x00"), binary.BigEndian.AppendUint64(nil, c.Seq)...)
	return append(b, c.Hash...)
}

// SealSigningBytes is the canonical message to sign when c seals the
// audit log (SignSeal): "bulwark-audit-seal-v1\x00", Seq (uint64 big
// endian), Hash. The domain differs from SigningBytes', so a checkpoint
// signed to anchor the log cannot be passed off as permission to purge it.
func (c Checkpoint) SealSigningBytes() []byte {
	b := append([]byte("bulwark-audit-seal-v1\x00"), binary.BigEndian.AppendUint64(nil, c.Seq)...)
	return append(b, c.Hash...)
}

// Seal is a signed checkpoint through which the audit log has been (or is
// being) purged: records up to Seq may be gone, and the record after Seq
// chains to Hash. Sig is SignSeal's signature by attestd's key; a verifier
// trusts a seal only once VerifySeal passes with that key.
type Seal struct {
	Checkpoint
	Sig []byte
}

// ChainError reports the first audit record that does not verify. It
// matches ErrAuditChain with errors.Is.
type ChainError struct {
	Position uint64 // the Seq the record at this position should have
	Seq      uint64 // the Seq found there (0 when the record is missing)
	Reason   string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("audit chain broken at record %d: %s", e.Position, e.Reason)
}

// Is makes errors.Is(err, ErrAuditChain) true.
func (e *ChainError) Is(target error) bool { return target == ErrAuditChain }

// VerifyResult summarises a verified chain.
type VerifyResult struct {
	Records uint64     // number of records checked
	First   uint64     // Seq of the first record checked (0: none)
	Head    Checkpoint // last record (Seq 0 for an empty log)
	// Seal is the verified seal the log was purged through (Seq 0: none,
	// or not checked); Unsealed is set when the log starts after record 1
	// without one (accepted only with AllowUnsealedStart).
	Seal     Checkpoint
	Unsealed bool
}

// VerifyOptions tune VerifyAudit.
type VerifyOptions struct {
	// Trusted checkpoints (e.g. signed earlier by attestd): each must be
	// present in the chain with that hash, unless it is at or before a
	// verified seal (purged).
	Trusted []Checkpoint
	// SealKey verifies the store's seal (AuditSeal, VerifySeal): the
	// records up to a seal whose signature verifies may be missing (purged
	// by Retain). Without it, or without a seal, the log must start at
	// record 1.
	SealKey crypto.PublicKey
	// AllowUnsealedStart accepts a log whose first record is past 1 with
	// no verified seal before it (the chain alone is then verified from
	// its first record; VerifyResult.Unsealed says so). A gap after the
	// first record is never accepted.
	AllowUnsealedStart bool
	// Since starts the verification at a checkpoint the caller trusts
	// (one of its signed checkpoints, or the store's verified seal): the
	// record at Since.Seq must have Since.Hash (or, if retention purged it,
	// the next record must chain to it), and only the records after it
	// are read. nil or Seq 0: from the start of the log. A checkpoint that
	// retention purged with records after it is ErrCheckpointPurged.
	Since *Checkpoint
}

// ErrCheckpointPurged: VerifyOptions.Since names a record that retention
// purged, together with the records after it; verify from the seal instead.
var ErrCheckpointPurged = errors.New("the checkpoint was purged by retention")

// VerifyAudit reads every stored record, from the first one there is (or
// VerifyOptions.Since) to the last one, and returns the first that does
// not verify as a *ChainError: a
// record whose hash does not match its content (edited), whose Seq is not
// the next one (dropped, reordered or renumbered), or whose Prev is not the
// previous record's hash (dropped, reordered or replaced). It never stops
// at the head's sequence number: the head is checked against the records,
// not trusted to say how many there are. The head read before the walk must
// be one of the walked records with the same hash (records removed from the
// end otherwise, on a store that keeps the head apart); records after it
// must have been appended meanwhile, so the head read after the walk must
// reach the last of them (records added behind the head, or the head set
// back, otherwise). Without trusted checkpoints, removing records from the
// end of a log whose head is its last record (the embedded store), or
// rewriting the whole log, cannot be detected; with them, a chain that ends
// before a checkpoint or disagrees with one is reported. A checkpoint of
// Seq 0 names the empty log (its hash is 32 zero bytes): it vouches for no
// record.
//
// Records missing before the next one are accepted only where a verified
// seal (SealKey) says they were purged: the seal's record is then checked
// like a trusted checkpoint, or, if it is gone too, the first record kept
// must chain to the seal's hash. Records missing after the seal are
// reported, at the start of the log as anywhere else. The seal is read
// again when a gap appears mid-walk, so a purge running meanwhile is not
// mistaken for tampering.
func VerifyAudit(ctx context.Context, a Audit, opts VerifyOptions) (VerifyResult, error) {
	trusted := map[uint64][]byte{}
	var maxTrusted uint64
	for _, c := range opts.Trusted {
		if c.Seq == 0 {
			if !bytes.Equal(c.Hash, genesisPrev) {
				return VerifyResult{}, &ChainError{Reason: "a trusted checkpoint of record 0 (the empty log) has a hash other than 32 zero bytes"}
			}
			continue
		}
		trusted[c.Seq] = c.Hash
		maxTrusted = max(maxTrusted, c.Seq)
	}
	var since Checkpoint
	if opts.Since != nil && opts.Since.Seq > 0 {
		since = *opts.Since
		if len(since.Hash) != sha256.Size {
			return VerifyResult{}, fmt.Errorf("checkpoint %d to verify from has a %d-byte hash, want 32: %w", since.Seq, len(since.Hash), ErrInvalid)
		}
		if h, ok := trusted[since.Seq]; ok && !bytes.Equal(h, since.Hash) {
			return VerifyResult{}, &ChainError{Position: since.Seq, Reason: "the checkpoint to verify from differs from a trusted checkpoint"}
		}
		trusted[since.Seq] = since.Hash
		maxTrusted = max(maxTrusted, since.Seq)
	}
	var res VerifyResult
	seal, err := readSeal(ctx, a, opts.SealKey)
	if err != nil {
		return res, err
	}
	res.Seal = seal.Checkpoint
	// The head first: every record up to it must be there.
	head, headErr, err := readHead(ctx, a)
	if err != nil {
		return res, err
	}
	prev := genesisPrev
	var after uint64
	if since.Seq > 0 {
		prev, after = nil, since.Seq-1 // record since.Seq is checked against its hash
	}
	var atHead []byte // the walked record at the first head's position
	for {
		recs, err := a.ReadAudit(ctx, after, 1000)
		if err != nil {
			return res, fmt.Errorf("reading audit log after %d: %w", after, err)
		}
		for i := range recs {
			r := &recs[i]
			want := after + 1
			if r.Seq > want {
				// Records want..r.Seq-1 are missing: purged, if a seal
				// covers them (read again: a purge may be running).
				if seal.Seq < r.Seq-1 && opts.SealKey != nil {
					if seal, err = readSeal(ctx, a, opts.SealKey); err != nil {
						return res, err
					}
					res.Seal = seal.Checkpoint
				}
				switch {
				case seal.Seq >= r.Seq-1:
					if since.Seq > 0 && since.Seq < r.Seq-1 {
						return res, fmt.Errorf("%w: checkpoint %d is gone with the records after it up to %d (sealed through %d): verify from the seal, %s",
							ErrCheckpointPurged, since.Seq, r.Seq-1, seal.Seq, seal.Checkpoint)
					}
					if h, ok := trusted[seal.Seq]; ok && !bytes.Equal(h, seal.Hash) {
						return res, &ChainError{Position: seal.Seq, Reason: "the seal differs from a trusted checkpoint"}
					}
					if seal.Seq >= r.Seq { // the seal's record is still here: checked when reached
						trusted[seal.Seq] = seal.Hash
						maxTrusted = max(maxTrusted, seal.Seq)
					}
					switch {
					case seal.Seq == r.Seq-1:
						prev = seal.Hash
					case since.Seq == r.Seq-1:
						prev = since.Hash
					default:
						prev = r.Prev
					}
					want = r.Seq
				case after == 0 && since.Seq == 0 && opts.AllowUnsealedStart:
					prev, want, res.Unsealed = r.Prev, r.Seq, true
				default:
					why := "no verified seal"
					if seal.Seq > 0 {
						why = fmt.Sprintf("the seal is at %d", seal.Seq)
					}
					from := max(want, seal.Seq+1) // the first missing record no seal covers
					return res, &ChainError{Position: from, Seq: r.Seq, Reason: fmt.Sprintf("records %d..%d are missing and were not purged (%s)", from, r.Seq-1, why)}
				}
			}
			if prev == nil { // the record of the checkpoint verified from
				prev = r.Prev
			}
			switch {
			case r.Seq != want:
				return res, &ChainError{Position: want, Seq: r.Seq, Reason: fmt.Sprintf("found sequence %d where %d belongs (record dropped, reordered or renumbered)", r.Seq, want)}
			case !bytes.Equal(r.Prev, prev):
				return res, &ChainError{Position: want, Seq: r.Seq, Reason: "prev hash does not match the previous record (record dropped, reordered or replaced)"}
			case !bytes.Equal(r.Hash, r.ComputeHash()):
				return res, &ChainError{Position: want, Seq: r.Seq, Reason: "hash does not match the record's content (record edited)"}
			}
			if h, ok := trusted[r.Seq]; ok && !bytes.Equal(h, r.Hash) {
				return res, &ChainError{Position: want, Seq: r.Seq, Reason: "hash differs from a trusted checkpoint"}
			}
			if r.Seq == head.Seq {
				atHead = r.Hash
			}
			if res.First == 0 {
				res.First = r.Seq
			}
			prev = r.Hash
			after = r.Seq
			res.Records++
			res.Head = Checkpoint{Seq: r.Seq, Hash: r.Hash}
		}
		if len(recs) < 1000 {
			break
		}
	}
	if headErr != nil {
		return res, headErr
	}
	if after < head.Seq {
		return res, &ChainError{Position: after + 1, Reason: fmt.Sprintf("the chain ends at %d but the head is record %d (records removed)", after, head.Seq)}
	}
	if head.Seq > 0 && !bytes.Equal(atHead, head.Hash) {
		return res, &ChainError{Position: head.Seq, Seq: head.Seq, Reason: "the record at the head's position differs from the recorded head"}
	}
	if after > head.Seq {
		// Records past the first head: appended while we walked, if the
		// head has moved on to them since.
		now, nowErr, err := readHead(ctx, a)
		switch {
		case err != nil:
			return res, err
		case nowErr != nil:
			return res, nowErr
		case now.Seq < after:
			return res, &ChainError{Position: now.Seq + 1, Seq: now.Seq + 1, Reason: fmt.Sprintf("record %d is past the recorded head (%d): records added behind the head, or the head set back", now.Seq+1, now.Seq)}
		case now.Seq == after && !bytes.Equal(now.Hash, res.Head.Hash):
			return res, &ChainError{Position: after, Seq: after, Reason: "the last record differs from the recorded head"}
		}
	}
	if after < maxTrusted {
		return res, &ChainError{Position: after + 1, Reason: fmt.Sprintf("log ends at %d before trusted checkpoint %d (records removed from the end)", after, maxTrusted)}
	}
	return res, nil
}

// String names c as `attestd audit verify` prints it and --since reads it:
// the record's sequence number, a colon, and its hash in lowercase hex.
func (c Checkpoint) String() string {
	return strconv.FormatUint(c.Seq, 10) + ":" + hex.EncodeToString(c.Hash)
}

// ParseCheckpoint reads a checkpoint named as Checkpoint.String does:
// SEQ:HASH, SEQ in decimal without sign or leading zeros, HASH 64
// lowercase hex digits. Anything else is ErrInvalid, saying what is wrong.
func ParseCheckpoint(s string) (Checkpoint, error) {
	seqStr, hashStr, ok := strings.Cut(s, ":")
	if !ok {
		return Checkpoint{}, fmt.Errorf("checkpoint %q: want SEQ:HASH (as 'attestd audit verify' prints it): %w", s, ErrInvalid)
	}
	if seqStr == "" || len(seqStr) > 20 || strings.Trim(seqStr, "0123456789") != "" || (len(seqStr) > 1 && seqStr[0] == '0') {
		return Checkpoint{}, fmt.Errorf("checkpoint %q: sequence number %q is not a decimal number without sign or leading zeros: %w", s, seqStr, ErrInvalid)
	}
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %q: sequence number out of range: %w", s, ErrInvalid)
	}
	if len(hashStr) != 2*sha256.Size || strings.Trim(hashStr, "0123456789abcdef") != "" {
		return Checkpoint{}, fmt.Errorf("checkpoint %q: hash must be %d lowercase hex digits (SHA-256): %w", s, 2*sha256.Size, ErrInvalid)
	}
	h, _ := hex.DecodeString(hashStr)
	return Checkpoint{Seq: seq, Hash: h}, nil
}

// readSeal returns the store's seal if key verifies it; Seq 0 when there
// is none or no key. A seal that does not verify is a *ChainError.
func readSeal(ctx context.Context, a Audit, key crypto.PublicKey) (Seal, error) {
	if key == nil {
		return Seal{}, nil
	}
	s, err := a.AuditSeal(ctx)
	if errors.Is(err, ErrNotFound) {
		return Seal{}, nil
	}
	if err != nil {
		return Seal{}, fmt.Errorf("reading audit seal: %w", err)
	}
	if len(s.Hash) != sha256.Size {
		return Seal{}, &ChainError{Position: s.Seq, Reason: "the stored seal is malformed"}
	}
	if err := VerifySeal(key, s); err != nil {
		return Seal{}, &ChainError{Position: s.Seq, Reason: fmt.Sprintf("the stored seal does not verify with attestd's key (%v)", err)}
	}
	return s, nil
}

// readHead reads the head of a: Seq 0 for an empty log, a *ChainError
// (second result) when the store reports its head broken, or an error when
// it cannot be read.
func readHead(ctx context.Context, a Audit) (Checkpoint, *ChainError, error) {
	head, err := a.AuditHead(ctx)
	var ce *ChainError
	switch {
	case errors.Is(err, ErrNotFound):
		return Checkpoint{}, nil, nil
	case errors.As(err, &ce):
		// The head itself is broken: the caller still walks, to report an
		// earlier break first if there is one.
		return Checkpoint{Seq: ce.Position}, ce, nil
	case err != nil:
		return Checkpoint{}, nil, fmt.Errorf("reading audit head: %w", err)
	}
	return Checkpoint{Seq: head.Seq, Hash: head.Hash}, nil, nil
}

// NormTime is how every time is stored: UTC, microsecond precision.
func NormTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// Nanos is t (normalised, NormTime) as Unix nanoseconds, 0 for the zero time:
// how both backends store times and how the audit chain hashes them.
func Nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return NormTime(t).UnixNano()
}

// FromNanos is Nanos reversed: the UTC time n, the zero time for 0.
func FromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
