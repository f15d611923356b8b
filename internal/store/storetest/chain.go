package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
)

// chainStart is when PurgedChain's records begin.
var chainStart = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// PurgedChain appends 12 records a minute apart and purges the first 4
// under a seal signed by the returned key.
func PurgedChain(t *testing.T, s store.Store) *store.VerifyOptions {
	ctx := context.Background()
	for i := range 12 {
		if _, err := s.AppendAudit(ctx, store.AuditEntry{Time: chainStart.Add(time.Duration(i) * time.Minute), Kind: store.KindAdmin,
			Subject: fmt.Sprint(i), Details: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}); err != nil {
			t.Fatal(err)
		}
	}
	key := SealKey(t)
	p, err := store.Retain(ctx, s, chainStart.Add(3*time.Minute+time.Second), store.RetainOptions{Signer: key})
	if err != nil || p.Audit != 4 {
		t.Fatalf("Retain: %+v, %v", p, err)
	}
	opts := &store.VerifyOptions{SealKey: &key.PublicKey}
	if res, err := store.VerifyAudit(ctx, s, *opts); err != nil || res.First != 5 {
		t.Fatalf("purged chain, untouched: %+v, %v", res, err)
	}
	return opts
}

// WantChainError fails t unless verifying s's audit chain under opts reports a
// ChainError at position pos.
func WantChainError(t *testing.T, s store.Store, opts store.VerifyOptions, pos uint64) {
	t.Helper()
	_, err := store.VerifyAudit(context.Background(), s, opts)
	var ce *store.ChainError
	if !errors.As(err, &ce) || !errors.Is(err, store.ErrAuditChain) {
		t.Fatalf("tampered chain verified: %v", err)
	}
	if ce.Position != pos {
		t.Fatalf("first bad record reported at %d, want %d (%v)", ce.Position, pos, err)
	}
}
