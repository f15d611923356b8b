package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// memAudit is an Audit over a slice, for fuzzing VerifyAudit. Like the
// embedded store, record i is stored under key i+1 whatever its Seq field
// says, and ReadAudit reads by key.
type memAudit []AuditRecord

func (m memAudit) AppendAudit(context.Context, AuditEntry) (AuditRecord, error) {
	return AuditRecord{}, errors.New("read only")
}
func (m memAudit) ReadAudit(_ context.Context, after uint64, limit int) ([]AuditRecord, error) {
	if after >= uint64(len(m)) {
		return nil, nil
	}
	out := m[after:]
	return out[:min(len(out), limit)], nil
}
func (m memAudit) AuditHead(context.Context) (AuditRecord, error) {
	if len(m) == 0 {
		return AuditRecord{}, ErrNotFound
	}
	return m[len(m)-1], nil
}

func (m memAudit) AuditSeal(context.Context) (Seal, error) {
	return Seal{}, ErrNotFound
}

// keptHead is an Audit whose head is kept apart from its records, as
// PostgreSQL's audit_head row is: set to record Seq of the chain, or to an
// empty log (0), whatever the records say.
type keptHead struct {
	memAudit
	seq uint64
}

func (k keptHead) AuditHead(context.Context) (AuditRecord, error) {
	if k.seq == 0 {
		return AuditRecord{}, ErrNotFound
	}
	if k.seq > uint64(len(k.memAudit)) {
		return AuditRecord{}, &ChainError{Position: k.seq, Reason: "the head record is missing"}
	}
	return k.memAudit[k.seq-1], nil
}

// FuzzVerifyAudit: VerifyAudit never panics on arbitrary stored records and
// never accepts a chain in which any record is wrong (hash, Seq or Prev)
// or a head that is not the last record — whether the head is the last
// record stored (the embedded store) or kept apart (PostgreSQL).
func FuzzVerifyAudit(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, uint8(3), uint8(0))
	f.Add(bytes.Repeat([]byte{0xff}, 40), uint8(1), uint8(0))
	f.Add([]byte{}, uint8(5), uint8(1))  // head kept apart, set to the empty log
	f.Add([]byte{}, uint8(5), uint8(4))  // head kept apart, set back to record 3
	f.Add([]byte{}, uint8(5), uint8(10)) // head kept apart, past the end
	f.Fuzz(func(t *testing.T, data []byte, n, headAt uint8) {
		var chain memAudit
		var head *AuditRecord
		for i := range int(n % 8) {
			r := NextAuditRecord(head, AuditEntry{Kind: KindAdmin, Subject: string(rune('a' + i)), Details: json.RawMessage(`{}`), Time: time.Unix(int64(i), 0)})
			chain = append(chain, r)
			head = &chain[len(chain)-1]
		}
		// Mutate with the fuzz bytes: each 3-byte instruction changes one
		// field of one record.
		for len(data) >= 3 && len(chain) > 0 {
			r := &chain[int(data[0])%len(chain)]
			switch data[1] % 5 {
			case 0:
				r.Seq ^= uint64(data[2])
			case 1:
				r.Subject += string(data[2:3])
			case 2:
				if len(r.Prev) > 0 {
					r.Prev = bytes.Clone(r.Prev)
					r.Prev[int(data[2])%len(r.Prev)] ^= 1
				}
			case 3:
				r.Time = r.Time.Add(time.Duration(data[2]) * time.Microsecond)
			case 4:
				r.Details = append(bytes.Clone(r.Details), data[2])
			}
			data = data[3:]
		}
		var a Audit = chain
		if headAt > 0 {
			a = keptHead{chain, uint64(headAt - 1)}
		}
		res, err := VerifyAudit(context.Background(), a, VerifyOptions{})
		if err == nil {
			prev := genesisPrev
			for i, r := range chain {
				if !bytes.Equal(r.Hash, r.ComputeHash()) || r.Seq != uint64(i+1) || !bytes.Equal(r.Prev, prev) {
					t.Fatalf("VerifyAudit accepted a broken record %d", i)
				}
				prev = r.Hash
			}
			if res.Records != uint64(len(chain)) {
				t.Fatalf("VerifyAudit checked %d of %d records", res.Records, len(chain))
			}
			if headAt > 0 && uint64(headAt-1) != uint64(len(chain)) {
				t.Fatalf("VerifyAudit accepted head %d for %d records", headAt-1, len(chain))
			}
		} else if !errors.Is(err, ErrAuditChain) {
			t.Fatalf("error is not ErrAuditChain: %v", err)
		}
	})
}

// FuzzParseCheckpoint: the --since argument parser never panics, and what
// it accepts is exactly what Checkpoint.String prints (one spelling per
// checkpoint: no sign, no leading zeros, lowercase hex).
func FuzzParseCheckpoint(f *testing.F) {
	f.Add("12:" + strings.Repeat("ab", 32))
	f.Add("0:" + strings.Repeat("00", 32))
	f.Add("012:" + strings.Repeat("ab", 32))
	f.Add("18446744073709551616:" + strings.Repeat("ab", 32))
	f.Add("1:" + strings.Repeat("AB", 32))
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCheckpoint(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error is not ErrInvalid: %v", err)
			}
			return
		}
		if c.String() != s || len(c.Hash) != 32 {
			t.Fatalf("ParseCheckpoint(%q) = %v, which prints as %q", s, c, c.String())
		}
	})
}
