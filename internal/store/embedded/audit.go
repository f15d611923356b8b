package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	bolt "go.etcd.io/bbolt"
)

// ---- audit ----

// auditHeadIn returns the head of the audit chain as tx sees it: what an
// earlier op of tx appended, else the committed head (cached after the
// first read; the chain only grows through appendAudit).
func (s *boltStore) auditHeadIn(tx *txn) (*store.AuditRecord, error) {
	if tx.head != nil {
		return tx.head, nil
	}
	s.headMu.Lock()
	h := s.head
	s.headMu.Unlock()
	if h != nil {
		return h, nil
	}
	return auditHead(tx.Tx)
}

func auditHead(tx *bolt.Tx) (*store.AuditRecord, error) {
	k, v := tx.Bucket(bktAudit).Cursor().Last()
	if k == nil {
		return nil, nil
	}
	var r record.Audit
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("store: corrupt audit head %x: %w", k, err)
	}
	rec := r.Record()
	return &rec, nil
}

func appendAudit(tx *txn, head *store.AuditRecord, e store.AuditEntry) (store.AuditRecord, error) {
	r := store.NextAuditRecord(head, e)
	b := tx.Bucket(bktAudit)
	b.FillPercent = 0.95
	err := put(b, seqKey(r.Seq), record.Audit{Seq: r.Seq, Time: store.Nanos(r.Time), Kind: string(r.Kind), Node: r.NodeID, Subject: r.Subject, Details: r.Details, Prev: r.Prev, Hash: r.Hash})
	if err == nil {
		h := r
		tx.head = &h
	}
	return r, err
}

func (s *boltStore) AppendAudit(ctx context.Context, e store.AuditEntry) (store.AuditRecord, error) {
	if err := store.ValidateAuditEntry(&e, s.now); err != nil {
		return store.AuditRecord{}, err
	}
	var out store.AuditRecord
	err := s.write(ctx, func(tx *txn) error {
		head, err := s.auditHeadIn(tx)
		if err != nil {
			return err
		}
		out, err = appendAudit(tx, head, e)
		return err
	})
	return out, err
}

func (s *boltStore) ReadAudit(ctx context.Context, after uint64, limit int) ([]store.AuditRecord, error) {
	if limit < 1 || limit > 1000 {
		return nil, fmt.Errorf("audit read limit %d: want 1..1000: %w", limit, store.ErrInvalid)
	}
	var out []store.AuditRecord
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bktAudit).Cursor()
		k, v := c.Seek(seqKey(after + 1))
		if after == 0 {
			k, v = c.First() // every record, even one under a key below 1
		}
		for ; k != nil && len(out) < limit; k, v = c.Next() {
			var r record.Audit
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("store: corrupt audit record %x: %w", k, err)
			}
			out = append(out, r.Record())
		}
		return nil
	})
	return out, err
}

func (s *boltStore) AuditHead(ctx context.Context) (store.AuditRecord, error) {
	var out store.AuditRecord
	err := s.view(func(tx *bolt.Tx) error {
		h, err := auditHead(tx)
		if err != nil {
			return err
		}
		if h == nil {
			return fmt.Errorf("audit log is empty: %w", store.ErrNotFound)
		}
		out = *h
		return nil
	})
	return out, err
}

// ---- purge ----

func (s *boltStore) PurgeExpired(ctx context.Context, now time.Time) (int, error) {
	t := store.Nanos(now)
	if s.isClosed() {
		return 0, store.ErrClosed
	}
	purged := s.nonces.expire(t)
	// Find the nodes whose challenge expired in a read transaction, which
	// does not hold up writes (a byte check skips the records without a
	// challenge); then clear them in one write, each checked again as that
	// transaction sees it.
	var expired []string
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bktNodes).ForEach(func(k, v []byte) error {
			if !bytes.Contains(v, []byte(`"challenge_hash"`)) {
				return nil
			}
			var r record.Node
			if json.Unmarshal(v, &r) == nil && r.ChHash != nil && r.ChExpires <= t {
				expired = append(expired, string(k))
			}
			return nil
		})
	})
	if err != nil || len(expired) == 0 {
		return purged, err
	}
	n := purged
	err = s.write(ctx, func(tx *txn) error {
		n = purged
		for _, id := range expired {
			r, err := s.nodeIn(tx, id)
			if err != nil {
				return err
			}
			if r == nil || r.ChHash == nil || r.ChExpires > t {
				continue
			}
			r.ChHash, r.ChExpires = nil, 0
			if err := s.putNode(tx, r); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// ---- retention ----

// sealKey holds the audit seal in bktMeta.
var sealKey = []byte("audit_seal")

type sealRec struct {
	Seq  uint64 `json:"seq"`
	Hash []byte `json:"hash"`
	Sig  []byte `json:"sig"`
}

func (s *boltStore) AuditSeal(ctx context.Context) (store.Seal, error) {
	var out store.Seal
	err := s.view(func(tx *bolt.Tx) error {
		r, err := get[sealRec](tx.Bucket(bktMeta), sealKey)
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("audit log never purged: %w", store.ErrNotFound)
		}
		out = store.Seal{Checkpoint: store.Checkpoint{Seq: r.Seq, Hash: r.Hash}, Sig: r.Sig}
		return nil
	})
	return out, err
}

func (s *boltStore) PurgeSealed(ctx context.Context, seal store.Seal, limit int) (store.Purged, error) {
	if err := store.ValidatePurge(seal, limit); err != nil {
		return store.Purged{}, err
	}
	var out store.Purged
	err := s.write(ctx, func(tx *txn) error {
		out = store.Purged{}
		meta, ab := tx.Bucket(bktMeta), tx.Bucket(bktAudit)
		old, err := get[sealRec](meta, sealKey)
		if err != nil {
			return err
		}
		var oldSeal store.Checkpoint
		if old != nil {
			oldSeal = store.Checkpoint{Seq: old.Seq, Hash: old.Hash}
		}
		head, err := s.auditHeadIn(tx)
		if err != nil {
			return err
		}
		var headSeq uint64
		if head != nil {
			headSeq = head.Seq
		}
		var atSeal []byte
		if r, err := get[record.Audit](ab, seqKey(seal.Seq)); err != nil {
			return err
		} else if r != nil {
			atSeal = r.Hash
		}
		isNew, err := store.CheckSeal(seal, oldSeal, headSeq, atSeal)
		if err != nil {
			return logical(err)
		}
		// All checks done: write.
		if isNew {
			if err := put(meta, sealKey, sealRec{Seq: seal.Seq, Hash: seal.Hash, Sig: seal.Sig}); err != nil {
				return err
			}
		}
		type victim struct {
			key     []byte
			verdict string // attestation id of a verdict record
		}
		var victims []victim
		c := ab.Cursor()
		k, v := c.First()
		for ; k != nil && len(victims) < limit; k, v = c.Next() {
			if len(k) == 8 && binary.BigEndian.Uint64(k) > seal.Seq {
				break
			}
			var r record.Audit
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("store: corrupt audit record %x: %w", k, err)
			}
			vic := victim{key: bytes.Clone(k)}
			if store.AuditKind(r.Kind) == store.KindVerdict {
				vic.verdict = r.Subject
			}
			victims = append(victims, vic)
		}
		out.More = k != nil && (len(k) != 8 || binary.BigEndian.Uint64(k) <= seal.Seq)
		att := tx.Bucket(bktAtt)
		for _, vic := range victims {
			if err := ab.Delete(vic.key); err != nil {
				return err
			}
			out.Audit++
			if vic.verdict == "" || att.Get([]byte(vic.verdict)) == nil {
				continue
			}
			if err := att.Delete([]byte(vic.verdict)); err != nil {
				return err
			}
			out.Attestations++
		}
		return nil
	})
	if err != nil {
		return store.Purged{}, err
	}
	return out, nil
}
