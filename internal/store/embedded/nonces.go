package embedded

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
)

// nonceTable holds the embedded store's quote nonces in memory (see
// IssueNonce): a map for issue and consume, and the keys in issue order
// for expiry. attestd issues every nonce with the same lifetime, so issue
// order is expiry order and expiring looks at each nonce about once, a
// bounded batch per lock hold: a fleet attesting 2,000 times a second
// leaves 120,000 nonces to expire every minute, and scanning the whole map
// under the lock stalled every Challenge and Attest meanwhile.
//
// Nothing in the table holds a pointer (the node is kept as a hash of its
// id), so the garbage collector never has to scan the 100,000-odd nonces a
// busy attestd keeps.
type nonceTable struct {
	mu    sync.Mutex
	recs  map[[32]byte]nonceRec
	order []queuedNonce // issue order; order[head:] are still in recs
	head  int
	// byNode holds each node's nonces still in recs, oldest first, so that
	// issuing past MaxNoncesPerNode drops that node's oldest. Keyed by the
	// node's hash, like nonceRec.node.
	byNode    map[[32]byte][][32]byte
	perNode   int   // the per-node limit (Options.maxNoncesPerNode), at least 1
	lastSweep int64 // Unix ns of the last full sweep (sweepLocked)
}

type nonceRec struct {
	node    [32]byte // SHA-256 of the node id it was issued to
	expires int64    // Unix ns
	used    int64    // Unix ns; 0 while unused
}

type queuedNonce struct {
	key     [32]byte
	expires int64
}

// MaxOutstandingNonces bounds the embedded store's in-memory nonces;
// IssueNonce drops expired ones and then refuses (ErrConflict) beyond it.
// The per-node limit (DefaultMaxNoncesPerNode) keeps any one node well
// below it.
const MaxOutstandingNonces = 1 << 20

// sweepInterval spaces full sweeps of a full table: each scans every nonce
// under the lock, so one per refused issue would stall every Challenge and
// Attest behind a flood.
const sweepInterval = int64(time.Second)

// expireBatch is how many nonces expire per hold of the lock.
const expireBatch = 1024

func (t *nonceTable) issue(key [32]byte, node string, expires, now int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.recs == nil {
		t.recs = map[[32]byte]nonceRec{}
		t.byNode = map[[32]byte][][32]byte{}
	}
	if _, ok := t.recs[key]; ok {
		return fmt.Errorf("nonce: %w", store.ErrConflict)
	}
	nh := sha256.Sum256([]byte(node))
	q := t.byNode[nh]
	for len(q) > 0 && len(q) >= t.perNode { // drop the node's oldest
		delete(t.recs, q[0])
		q = q[1:]
	}
	if len(t.recs) >= MaxOutstandingNonces && now-t.lastSweep >= sweepInterval {
		t.sweepLocked(now) // issue order may not be expiry order: look at all
		t.lastSweep = now
		q = t.byNode[nh]
	}
	if len(t.recs) >= MaxOutstandingNonces {
		t.byNode[nh] = q
		return fmt.Errorf("nonce: %d nonces outstanding, the limit: %w", len(t.recs), store.ErrConflict)
	}
	t.recs[key] = nonceRec{node: nh, expires: expires}
	t.order = append(t.order, queuedNonce{key, expires})
	t.byNode[nh] = append(q, key)
	return nil
}

// forgetLocked removes key, which recs no longer holds, from the front of
// its node's queue (nonces leave a node's queue oldest first).
func (t *nonceTable) forgetLocked(node, key [32]byte) {
	q := t.byNode[node]
	if i := slices.Index(q, key); i >= 0 {
		q = slices.Delete(q, i, i+1)
	}
	if len(q) == 0 {
		delete(t.byNode, node)
		return
	}
	t.byNode[node] = q
}

// consume marks the nonce used, once, by the node it was issued to,
// before it expires.
func (t *nonceTable) consume(key [32]byte, node string, now int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.recs[key]
	if err := store.CheckNonce(!ok, ok && r.node == sha256.Sum256([]byte(node)), ok && r.used != 0, ok && now >= r.expires); err != nil {
		return err
	}
	r.used = now
	t.recs[key] = r
	return nil
}

// expire drops the nonces expired at now from the front of the issue order
// (a nonce behind one that lives longer waits for it; consume refuses it
// as expired meanwhile) and returns how many it dropped. It takes the lock
// for at most expireBatch nonces at a time.
func (t *nonceTable) expire(now int64) int {
	n := 0
	for {
		t.mu.Lock()
		k, more := t.expireLocked(now, expireBatch)
		t.mu.Unlock()
		n += k
		if !more {
			return n
		}
	}
}

// expireLocked drops up to max expired nonces from the front of the issue
// order; more reports that it stopped at max.
func (t *nonceTable) expireLocked(now int64, max int) (n int, more bool) {
	for t.head < len(t.order) && t.order[t.head].expires <= now {
		if n == max {
			return n, true
		}
		q := t.order[t.head]
		if r, ok := t.recs[q.key]; ok && r.expires == q.expires {
			delete(t.recs, q.key)
			t.forgetLocked(r.node, q.key)
			n++
		}
		t.order[t.head] = queuedNonce{}
		t.head++
	}
	if t.head > 4096 && t.head > len(t.order)/2 { // reclaim the consumed front
		t.order = append(t.order[:0], t.order[t.head:]...)
		t.head = 0
	}
	return n, false
}

// sweepLocked drops every nonce expired at now, wherever it is in the
// issue order (the limit is reached: a full scan, rarely).
func (t *nonceTable) sweepLocked(now int64) {
	for k, r := range t.recs {
		if r.expires <= now {
			delete(t.recs, k)
		}
	}
	for nh, q := range t.byNode {
		live := q[:0]
		for _, k := range q {
			if _, ok := t.recs[k]; ok {
				live = append(live, k)
			}
		}
		if len(live) == 0 {
			delete(t.byNode, nh)
		} else {
			t.byNode[nh] = live
		}
	}
	live := t.order[:0]
	for _, q := range t.order[t.head:] {
		if r, ok := t.recs[q.key]; ok && r.expires == q.expires {
			live = append(live, q)
		}
	}
	clear(t.order[len(live):])
	t.order, t.head = live, 0
}
