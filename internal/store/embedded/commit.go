package embedded

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/internal/gather"
	"github.com/bulwark-project/bulwark/internal/store/internal/record"
	bolt "go.etcd.io/bbolt"
)

// maxGroup bounds how many writes share one commit.
const maxGroup = 512

// commitSpacing is the least time between the starts of two commits while
// writes keep arriving. An idle store commits a write at once; under load
// the committer waits out the rest of the spacing so that one commit (two
// fdatasyncs) serves every write that arrived meanwhile, instead of a
// commit per write or two. It bounds the latency it adds to this. Much of
// a commit's CPU (the fdatasyncs, the meta and branch pages, waking the
// committer) does not depend on how many writes it holds: at 2,000
// attestations/s, 2 ms shared it among ~4 of them, 5 ms among ~10
// (docs/performance.md, seventh round).
const commitSpacing = 5 * time.Millisecond

// fullGroup is how many queued writes make the committer stop waiting out
// commitSpacing: enough to amortise a commit, few enough to bound latency.
const fullGroup = 64

type writeOp struct {
	fn  func(tx *txn) error
	err error
	res chan error
}

// txn is a write transaction and the node records its ops wrote, which
// reach the node cache only once the transaction has committed.
type txn struct {
	*bolt.Tx
	nodes map[string]*record.Node // nil: deleted
	last  map[string]record.Last  // last verdicts written (zero: deleted)
	head  *store.AuditRecord      // the audit chain's head, once an op appended

	logged int  // entries appended to the last verdict log (lastlog.go)
	folded bool // the log was folded into bktLast
}

func (s *boltStore) update(fn func(tx *txn) error) error { return s.updateFold(fn, true) }

// updateFold is update; mayFold lets the transaction fold the last verdict
// log when that is due (lastlog.go). A write retried alone after its group
// failed does not: a fold that cannot be written (a full disk) must not
// fail every write that could be.
func (s *boltStore) updateFold(fn func(tx *txn) error, mayFold bool) error {
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	t := &txn{nodes: map[string]*record.Node{}, last: map[string]record.Last{}}
	err := s.db.Update(func(tx *bolt.Tx) error {
		t.Tx = tx
		if err := fn(t); err != nil {
			return err
		}
		if mayFold && s.foldDue(t) {
			return s.fold(t)
		}
		return nil
	})
	if err == nil {
		s.lastCommitted(t)
		s.nodes.committed(t.nodes, t.last)
		if t.head != nil {
			s.headMu.Lock()
			s.head = t.head
			s.headMu.Unlock()
		}
	}
	return err
}

// logicalError marks an error an op returned before writing anything: the
// transaction stays good for the other ops of its group.
type logicalError struct{ err error }

func (e logicalError) Error() string { return e.err.Error() }
func (e logicalError) Unwrap() error { return e.err }

func logical(err error) error { return logicalError{err} }

// write runs fn in a write transaction shared with other queued writes and
// returns once that transaction is durable. fn must do all its checks before
// its first write and return them wrapped with logical(); any other error
// rolls back the group, which is then retried one op per transaction.
func (s *boltStore) write(ctx context.Context, fn func(tx *txn) error) error {
	if s.unbatched {
		return s.writeAlone(fn)
	}
	op := &writeOp{fn: fn, res: make(chan error, 1)}
	s.mu.RLock()
	if s.closed {
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
	return unwrapLogical(<-op.res)
}

// unwrapLogical returns the error an op's caller sees: a logical() error
// unwrapped, any other as it is.
func unwrapLogical(err error) error {
	var le logicalError
	if errors.As(err, &le) {
		return le.err
	}
	return err
}

// applyOps runs ops in tx in order, setting each op's err. The first error
// that is not logical() aborts tx: applyOps returns it and the caller rolls
// back.
func applyOps(tx *txn, ops ...*writeOp) error {
	for _, op := range ops {
		op.err = runOp(op.fn, tx)
		var le logicalError
		if op.err != nil && !errors.As(op.err, &le) {
			return op.err
		}
	}
	return nil
}

// commitAlone runs op in a transaction of its own and returns the
// transaction's error, else op's own (logical errors still wrapped).
// mayFold is updateFold's.
func (s *boltStore) commitAlone(op *writeOp, mayFold bool) error {
	op.err = nil
	if err := s.updateFold(func(tx *txn) error { return applyOps(tx, op) }, mayFold); err != nil {
		return err
	}
	return op.err
}

// runOp runs one write, turning a panic (e.g. in an UpdateNode callback)
// into an error that rolls its transaction back instead of killing the
// committer.
func runOp(fn func(tx *txn) error, tx *txn) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store: write panicked: %v", r)
		}
	}()
	return fn(tx)
}

// writeAlone runs fn in a transaction of its own.
func (s *boltStore) writeAlone(fn func(tx *txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	return unwrapLogical(s.commitAlone(&writeOp{fn: fn}, true))
}

func (s *boltStore) committer() {
	defer close(s.done)
	group := make([]*writeOp, 0, maxGroup)
	var last time.Time // when the previous commit started
	for first := range s.ops {
		group = append(group[:0], first)
		if wait := commitSpacing - time.Since(last); wait > 0 {
			group = gather.Within(group, s.ops, wait, fullGroup)
		}
		group = gather.Queued(group, s.ops, maxGroup)
		last = time.Now()
		err := s.update(func(tx *txn) error { return applyOps(tx, group...) })
		if err == nil {
			if s.onCommit != nil {
				s.onCommit(len(group), time.Since(last))
			}
			for _, op := range group {
				op.res <- op.err
			}
			continue
		}
		if len(group) == 1 {
			group[0].res <- err
			continue
		}
		// One op failed hard: retry each alone so the others are not lost.
		for _, op := range group {
			op.res <- s.commitAlone(op, false)
		}
	}
}
