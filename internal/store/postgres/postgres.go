// Package postgres is the store.Store kept in a PostgreSQL database, which
// several attestd replicas may share. The schema and its migrations are in
// schema.go; audit appends are grouped into shared transactions (batch.go).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgStore is the PostgreSQL store. Several attestd replicas may share one
// database: single-use values are consumed with one conditional UPDATE ...
// RETURNING, and audit appends lock the single audit_head row, so the chain
// stays linear.
type pgStore struct {
	pool   *pgxpool.Pool
	log    *slog.Logger
	now    func() time.Time
	closed atomic.Bool

	mu      sync.RWMutex // held (R) while sending on ops; (W) by Close
	ops     chan *pgAuditOp
	batcher chan struct{} // closed when the batcher has stopped
	perNode int           // nonces kept per node (Options.MaxNoncesPerNode)
}

var _ store.Store = (*pgStore)(nil)

// open connects to the PostgreSQL database named by dsn and creates
// or migrates the schema (serialised between replicas by an advisory lock).
func open(ctx context.Context, dsn string, opts store.Options) (store.Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: PostgreSQL DSN does not parse (want postgres://user@host/db?...): %w", store.ErrInvalid)
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		// pgx's default (4 connections on 2 cores) serialises concurrent
		// requests behind a few commits; PostgreSQL groups WAL flushes of
		// concurrent commits, so more connections mean fewer fsyncs each.
		cfg.MaxConns = 32
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: connecting to PostgreSQL at %s: %w", cfg.ConnConfig.Host, err)
	}
	s := &pgStore{pool: pool, log: opts.Logger, now: opts.Now, ops: make(chan *pgAuditOp, pgMaxGroup), batcher: make(chan struct{}),
		perNode: opts.NoncesPerNode()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: PostgreSQL at %s: %w", cfg.ConnConfig.Host, err)
	}
	go s.runBatcher()
	return store.Classified(s), nil
}

func (s *pgStore) Close() error {
	s.mu.Lock()
	if !s.closed.CompareAndSwap(false, true) {
		s.mu.Unlock()
		return nil
	}
	close(s.ops)
	s.mu.Unlock()
	<-s.batcher
	s.pool.Close()
	return nil
}

func (s *pgStore) check() error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return nil
}

func isUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// IsPostgresURL reports whether dsn is a PostgreSQL URL: it starts with
// "postgres://" or "postgresql://".
func IsPostgresURL(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// errNotPostgresURL is what CheckDSN returns. It never repeats the DSN,
// which may carry a password.
var errNotPostgresURL = fmt.Errorf("store: the PostgreSQL DSN must be a postgres:// or postgresql:// URL, e.g. postgres://attestd@db.example/attestd?sslmode=verify-full (key=value connection strings are not accepted): %w", store.ErrInvalid)

// CheckDSN returns nil when dsn is a postgres:// or postgresql:// URL and
// otherwise an ErrInvalid error that does not repeat dsn (it may hold a
// password).
func CheckDSN(dsn string) error {
	if !IsPostgresURL(dsn) {
		return errNotPostgresURL
	}
	return nil
}

// Open opens the PostgreSQL store at dsn, which must be a postgres:// or
// postgresql:// URL (CheckDSN); anything else is refused, never taken for
// a directory.
func Open(ctx context.Context, dsn string, opts store.Options) (store.Store, error) {
	if err := CheckDSN(dsn); err != nil {
		return nil, err
	}
	return open(ctx, dsn, opts)
}
