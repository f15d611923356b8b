package embedded

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"github.com/bulwark-project/bulwark/internal/store"
)

func nk(i int) [32]byte { return sha256.Sum256(fmt.Appendf(nil, "nonce-%d", i)) }

// nodeOf spreads test nonces over 100 nodes, below DefaultMaxNoncesPerNode each.
func nodeOf(i int) string { return fmt.Sprint("node-", i%100) }

func TestNonceTableExpiry(t *testing.T) {
	tb := nonceTable{perNode: store.DefaultMaxNoncesPerNode}
	const n = 3*expireBatch + 17 // several lock holds
	for i := range n {
		if err := tb.issue(nk(i), nodeOf(i), int64(1000+i), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.issue(nk(5), nodeOf(5), 5000, 0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("issuing a nonce twice: %v, want ErrConflict", err)
	}
	if err := tb.consume(nk(10), nodeOf(10), 1005); err != nil {
		t.Fatal(err)
	}
	if err := tb.consume(nk(10), nodeOf(10), 1005); !errors.Is(err, store.ErrNonceUsed) {
		t.Fatalf("replay: %v, want ErrNonceUsed", err)
	}
	if err := tb.consume(nk(11), "other", 1005); !errors.Is(err, store.ErrNonceUnknown) {
		t.Fatalf("foreign node: %v, want ErrNonceUnknown", err)
	}
	// Everything issued with an expiry up to 1000+half expires, used or not.
	half := n / 2
	if got := tb.expire(int64(1000 + half)); got != half+1 {
		t.Fatalf("expire removed %d, want %d", got, half+1)
	}
	if err := tb.consume(nk(half), nodeOf(half), 0); !errors.Is(err, store.ErrNonceUnknown) {
		t.Fatalf("expired nonce after expire: %v, want ErrNonceUnknown", err)
	}
	if err := tb.consume(nk(half+1), nodeOf(half+1), int64(1000+half)); err != nil {
		t.Fatalf("live nonce: %v", err)
	}
	if got := tb.expire(1 << 40); got != n-half-1 {
		t.Fatalf("second expire removed %d, want %d", got, n-half-1)
	}
	if len(tb.recs) != 0 || len(tb.order)-tb.head != 0 || len(tb.byNode) != 0 {
		t.Fatalf("after expiring all: %d nonces, %d queued, %d nodes", len(tb.recs), len(tb.order)-tb.head, len(tb.byNode))
	}
	if tb.head > 4096 {
		t.Fatalf("the consumed front of the queue was not reclaimed (head %d)", tb.head)
	}
}

// A nonce issued with a shorter life behind a longer one is refused as
// expired, and goes once the one before it has: nothing expired is ever
// accepted, whatever the order.
func TestNonceTableOutOfOrder(t *testing.T) {
	tb := nonceTable{perNode: store.DefaultMaxNoncesPerNode}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tb.issue(nk(1), "node", 100, 0))
	must(tb.issue(nk(2), "node", 10, 0))
	if got := tb.expire(50); got != 0 {
		t.Fatalf("expire(50) removed %d, want 0 (the front lives until 100)", got)
	}
	if err := tb.consume(nk(2), "node", 50); !errors.Is(err, store.ErrNonceExpired) {
		t.Fatalf("expired nonce behind a live one: %v, want ErrNonceExpired", err)
	}
	if got := tb.expire(100); got != 2 {
		t.Fatalf("expire(100) removed %d, want 2", got)
	}
	// The full sweep (at the limit) finds expired nonces anywhere.
	must(tb.issue(nk(3), "node", 1000, 0))
	must(tb.issue(nk(4), "node", 200, 0))
	tb.mu.Lock()
	tb.sweepLocked(300)
	tb.mu.Unlock()
	if _, ok := tb.recs[nk(4)]; ok || len(tb.recs) != 1 || len(tb.order)-tb.head != 1 {
		t.Fatalf("after sweep: %d nonces, %d queued", len(tb.recs), len(tb.order)-tb.head)
	}
	must(tb.consume(nk(3), "node", 300))
}

// TestNonceTablePerNodeLimit: a flood of nonces for one node keeps only
// its newest DefaultMaxNoncesPerNode, the oldest become unknown, and other nodes
// are untouched; expiry after that leaves nothing behind.
func TestNonceTablePerNodeLimit(t *testing.T) {
	tb := nonceTable{perNode: store.DefaultMaxNoncesPerNode}
	if err := tb.issue(nk(-1), "bystander", 5000, 0); err != nil {
		t.Fatal(err)
	}
	const extra = 10
	for i := range store.DefaultMaxNoncesPerNode + extra {
		if err := tb.issue(nk(i), "victim", int64(1000+i), 0); err != nil {
			t.Fatalf("issue %d: %v", i, err)
		}
	}
	if len(tb.recs) != store.DefaultMaxNoncesPerNode+1 {
		t.Fatalf("%d nonces kept, want %d", len(tb.recs), store.DefaultMaxNoncesPerNode+1)
	}
	for i := range store.DefaultMaxNoncesPerNode + extra {
		err := tb.consume(nk(i), "victim", 500)
		if i < extra && !errors.Is(err, store.ErrNonceUnknown) {
			t.Fatalf("dropped nonce %d: %v, want ErrNonceUnknown", i, err)
		}
		if i >= extra && err != nil {
			t.Fatalf("kept nonce %d: %v", i, err)
		}
	}
	if err := tb.consume(nk(-1), "bystander", 500); err != nil {
		t.Fatalf("another node's nonce: %v", err)
	}
	if got := tb.expire(1 << 40); got != store.DefaultMaxNoncesPerNode+1 {
		t.Fatalf("expire removed %d, want %d", got, store.DefaultMaxNoncesPerNode+1)
	}
	if len(tb.recs) != 0 || len(tb.byNode) != 0 {
		t.Fatalf("left behind: %d nonces, %d nodes", len(tb.recs), len(tb.byNode))
	}
}

// TestNonceTableLimitOption: Options.MaxNoncesPerNode sets the limit.
func TestNonceTableLimitOption(t *testing.T) {
	tb := nonceTable{perNode: 3}
	for i := range 5 {
		if err := tb.issue(nk(i), "n", 1000, 0); err != nil {
			t.Fatal(err)
		}
	}
	if len(tb.recs) != 3 {
		t.Fatalf("%d nonces kept, want 3", len(tb.recs))
	}
	if err := tb.consume(nk(1), "n", 500); !errors.Is(err, store.ErrNonceUnknown) {
		t.Fatalf("dropped nonce: %v", err)
	}
}
