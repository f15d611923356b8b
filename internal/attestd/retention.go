package attestd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/token"
)

// DefaultRetention is how long attestations and audit records are kept
// by default. A 10,000-host fleet attesting (and releasing) once a minute
// keeps 6 million attestations in 10 hours; at the ~3,000 bytes each
// that the embedded store's file measures at steady state
// (BenchmarkRetentionSteadyState, docs/performance.md) that is ~18 GB,
// under the 20 GB budget however long it runs. See docs/storage.md
// "Retention" to size it for another fleet.
const DefaultRetention = 10 * time.Hour

// MinRetention is the shortest retention `attestd serve` accepts.
const MinRetention = time.Minute

// Retainer purges the attestations and audit records older than
// Retention, under seals signed with the token key (store.Retain), and
// then drops the signed checkpoints the purge made moot. Run Round from
// one goroutine (attestd runs it every minute).
type Retainer struct {
	Store       store.Store
	Tokens      *token.Signer
	Checkpoints *Checkpoints // nil: none to prune
	Retention   time.Duration
	Now         func() time.Time // nil: time.Now
	Logger      *slog.Logger     // nil: discard
}

// Round purges what is older than Now()-Retention, in bounded
// transactions, and returns what it purged.
func (r *Retainer) Round(ctx context.Context) (store.Purged, error) {
	if r.Retention <= 0 {
		return store.Purged{}, errors.New("retention: no retention period set")
	}
	now, log := r.Now, r.Logger
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cutoff := now().Add(-r.Retention)
	p, err := store.Retain(ctx, r.Store, cutoff, store.RetainOptions{Signer: r.Tokens.Key(), Rand: defaultRand})
	if p.Audit > 0 {
		log.InfoContext(ctx, "retention purged", "audit_records", p.Audit, "attestations", p.Attestations,
			"before", cutoff.UTC().Format(time.RFC3339))
	}
	if err != nil {
		return p, fmt.Errorf("retention: %w", err)
	}
	if r.Checkpoints != nil && p.Audit > 0 {
		seal, err := r.Store.AuditSeal(ctx)
		if err != nil {
			return p, fmt.Errorf("retention: reading the seal: %w", err)
		}
		if err := r.Checkpoints.Prune(seal.Seq); err != nil {
			return p, fmt.Errorf("retention: %w", err)
		}
	}
	return p, nil
}
