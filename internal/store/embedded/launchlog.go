package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	"github.com/bulwark-project/bulwark/internal/store"
	bolt "go.etcd.io/bbolt"
)

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

func (r *prefixRec) prefix(node string) store.LaunchPrefix {
	return store.LaunchPrefix{NodeID: node, ResetCount: r.Reset, RestartCount: r.Restart, Clock: r.Clock, Events: r.Events,
		PCR: r.PCR, UpdatedAt: store.FromNanos(r.Updated)}
}

// endMark is the sandbox index value of an END record.
var endMark = []byte{'e'}

func recKey(n uint64) []byte { return binary.BigEndian.AppendUint64([]byte{'r'}, n) }

func sandboxKey(id string, n uint64) []byte {
	k := append([]byte{'s'}, id...)
	return binary.BigEndian.AppendUint64(append(k, 0), n)
}

func decodePrefixRecord(n uint64, v []byte) (store.PrefixRecord, error) {
	if len(v) < 2*store.PrefixDigestSize+1 {
		return store.PrefixRecord{}, fmt.Errorf("store: corrupt launch record %d (%d bytes)", n, len(v))
	}
	return store.PrefixRecord{RecNum: n, Digest: bytes.Clone(v[:32]), PCR: bytes.Clone(v[32:64]), SandboxID: string(v[64:])}, nil
}

func (s *boltStore) ReadLaunchPrefix(ctx context.Context, nodeID string, at uint64, sandboxID string) (store.PrefixView, error) {
	var out store.PrefixView
	err := s.view(func(tx *bolt.Tx) error {
		r, err := get[prefixRec](tx.Bucket(bktPrefix), []byte(nodeID))
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("launch prefix of node %s: %w", nodeID, store.ErrNotFound)
		}
		out.Prefix = store.ClonePrefix(r.prefix(nodeID))
		recs := tx.Bucket(bktPrefixRecs).Bucket([]byte(nodeID))
		switch {
		case at == 0:
			out.PCRAt = make([]byte, store.PrefixDigestSize)
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

func (s *boltStore) AdvanceLaunchPrefix(ctx context.Context, p store.LaunchPrefix, recs []store.PrefixRecord) (store.LaunchPrefix, error) {
	if err := store.ValidatePrefix(&p, recs); err != nil {
		return store.LaunchPrefix{}, err
	}
	var out store.LaunchPrefix
	err := s.write(ctx, func(tx *txn) error {
		if tx.Bucket(bktNodes).Get([]byte(p.NodeID)) == nil {
			return logical(fmt.Errorf("node %s: %w", p.NodeID, store.ErrNotFound))
		}
		hb := tx.Bucket(bktPrefix)
		old, err := get[prefixRec](hb, []byte(p.NodeID))
		if err != nil {
			return logical(err)
		}
		var oldp *store.LaunchPrefix
		if old != nil {
			op := old.prefix(p.NodeID)
			oldp = &op
		}
		replace, add, err := store.AdvancePlan(oldp, &p, recs)
		if err != nil {
			if oldp != nil {
				out = store.ClonePrefix(*oldp)
			}
			return logical(err)
		}
		if !replace && len(add) == 0 {
			out = store.ClonePrefix(*oldp)
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
		np := prefixRec{Reset: p.ResetCount, Restart: p.RestartCount, Clock: p.Clock, Events: p.Events, PCR: p.PCR, Updated: store.Nanos(s.now())}
		if old != nil && !replace && old.Clock > np.Clock {
			np.Clock = old.Clock
		}
		out = store.ClonePrefix(np.prefix(p.NodeID))
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
