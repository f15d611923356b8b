package embedded

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	bolt "go.etcd.io/bbolt"
)

// Last verdicts are written twice over, cheaply (schema 4).
//
// Every attestation changes its node's last verdict. Written in place in
// bktLast, that is a random 4 KiB leaf among hundreds rewritten per
// attestation: with 10,000 nodes, most of a group commit's pages and a
// sixth of attestd's CPU (docs/performance.md). So a last verdict is
// appended instead, in the transaction that records it, to bktLastLog
// (keys in commit order: the writes of one commit share its tail page),
// and kept in memory (lastLog.pending) until a later commit folds every
// pending verdict into bktLast, newest per node, and empties the log.
//
// The truth is bktLast overlaid by the log, in order: both are in the
// file, written by the same transactions as the attestations they
// describe, so a crash loses nothing acknowledged; the next open folds
// what the log holds before anything reads (foldAtOpen). In memory,
// pending mirrors the log (the newest entry per node; a zero Last is a
// deletion), so readers look there first and then in bktLast (lastVerdict).
//
// A fold changes no value anyone can read, only where it is kept, but a
// reader whose read transaction began before the fold's commit sees the
// old bktLast: it must still find the verdicts in pending. So readers of
// bktLast hold foldMu (R) for their whole read transaction (view), and a
// fold empties pending under foldMu (W), after its commit.
type lastLog struct {
	foldMu sync.RWMutex // R: a read transaction that may read bktLast; W: emptying pending after a fold

	mu      sync.Mutex
	pending map[string]record.Last // newest unfolded last verdict per node (zero: deleted)

	// Touched by update() only, under boltStore.updateMu:
	next     uint64    // the next log key
	entries  int       // entries in the log
	lastFold time.Time // when the log was last folded (or the store opened)
	foldAt   int       // entries that make a fold due; 0: foldEntries (tests set less)
}

// Folding the log is due when it holds foldEntries entries, or pending
// verdicts have waited foldEvery: often enough to keep the log (and what
// an open after a crash folds) small, rarely enough that each fold
// rewrites a bktLast leaf for many verdicts at once.
const (
	foldEntries = 16384
	foldEvery   = 30 * time.Second
)

// lastOfPending returns node id's pending last verdict; ok is false when
// none is pending (bktLast holds the truth).
func (l *lastLog) lastOfPending(id string) (lv record.Last, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lv, ok = l.pending[id]
	return lv, ok
}

// lastLogEntry is one entry of bktLastLog: node Node's last verdict is
// Last from then on (the zero Last: it has none, the node was deleted).
type lastLogEntry struct {
	Node string      `json:"node"`
	Last record.Last `json:"last"`
}

// appendLast appends lv as node id's last verdict to tx's log.
func (s *boltStore) appendLast(tx *txn, id string, lv record.Last) error {
	b, err := json.Marshal(lastLogEntry{Node: id, Last: lv})
	if err != nil {
		return err
	}
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], s.last.next)
	s.last.next++
	tx.logged++
	return tx.Bucket(bktLastLog).Put(k[:], b)
}

// lastVerdict returns node id's last verdict as committed (zero if none):
// pending, else bktLast as tx sees it. A read transaction's caller holds
// foldMu (R), as view does.
func (s *boltStore) lastVerdict(tx *bolt.Tx, id []byte) (record.Last, error) {
	if lv, ok := s.last.lastOfPending(string(id)); ok {
		return lv, nil
	}
	lv, err := get[record.Last](tx.Bucket(bktLast), id)
	if lv == nil || err != nil {
		return record.Last{}, err
	}
	return *lv, nil
}

// foldDue reports whether the commit about to be made should fold the log.
func (s *boltStore) foldDue(tx *txn) bool {
	n, at := s.last.entries+tx.logged, s.last.foldAt
	if at == 0 {
		at = foldEntries
	}
	return n >= at || (n > 0 && s.now().Sub(s.last.lastFold) >= foldEvery)
}

// fold writes every pending last verdict, and those tx wrote, into
// bktLast and empties the log, in tx. update empties pending once tx has
// committed.
func (s *boltStore) fold(tx *txn) error {
	s.last.mu.Lock()
	folded := make(map[string]record.Last, len(s.last.pending)+len(tx.last))
	for id, lv := range s.last.pending {
		folded[id] = lv
	}
	s.last.mu.Unlock()
	for id, lv := range tx.last {
		folded[id] = lv
	}
	b := tx.Bucket(bktLast)
	for id, lv := range folded {
		var err error
		if lv == (record.Last{}) {
			err = b.Delete([]byte(id))
		} else {
			err = put(b, []byte(id), lv)
		}
		if err != nil {
			return err
		}
	}
	if err := emptyLastLog(tx.Tx); err != nil {
		return err
	}
	tx.folded = true
	return nil
}

// emptyLastLog drops the log bucket and creates it again: cheaper than
// deleting its keys one by one.
func emptyLastLog(tx *bolt.Tx) error {
	if err := tx.DeleteBucket(bktLastLog); err != nil {
		return err
	}
	_, err := tx.CreateBucket(bktLastLog)
	return err
}

// lastCommitted brings pending up to a committed transaction: emptied after a
// fold (under foldMu: no read transaction begun before the fold reads
// pending meanwhile), else with the last verdicts tx wrote.
func (s *boltStore) lastCommitted(t *txn) {
	if t.folded {
		s.last.foldMu.Lock()
		s.last.mu.Lock()
		s.last.pending = nil
		s.last.mu.Unlock()
		s.last.foldMu.Unlock()
		s.last.entries, s.last.next, s.last.lastFold = 0, 0, s.now()
		return
	}
	s.last.entries += t.logged
	if len(t.last) == 0 {
		return
	}
	s.last.mu.Lock()
	if s.last.pending == nil {
		s.last.pending = make(map[string]record.Last, len(t.last))
	}
	for id, lv := range t.last {
		s.last.pending[id] = lv
	}
	s.last.mu.Unlock()
}

// foldAtOpen folds what the log holds (a previous process's unfolded last
// verdicts, left by a crash or a close) into bktLast, in log order, and
// empties the log: in the open's transaction, before anything reads.
func foldAtOpen(tx *bolt.Tx) error {
	lb, b := tx.Bucket(bktLastLog), tx.Bucket(bktLast)
	if k, _ := lb.Cursor().First(); k == nil {
		return nil
	}
	err := lb.ForEach(func(k, v []byte) error {
		var e lastLogEntry
		if err := json.Unmarshal(v, &e); err != nil || e.Node == "" {
			return fmt.Errorf("corrupt last verdict log entry %x: %v", k, err)
		}
		if e.Last == (record.Last{}) {
			return b.Delete([]byte(e.Node))
		}
		return put(b, []byte(e.Node), e.Last)
	})
	if err != nil {
		return err
	}
	return emptyLastLog(tx)
}
