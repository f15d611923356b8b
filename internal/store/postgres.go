package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgSchemaVersion is the schema this code writes; older ones are migrated
// on open, newer ones refused.
const pgSchemaVersion = 7

// pgLockKey is the advisory lock key that serialises schema migration
// between replicas starting at once ("bulwark" in ASCII).
const pgLockKey = 0x62756c7761726b

var pgSchema = []string{
	`CREATE TABLE IF NOT EXISTS bulwark_schema (version integer NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS nodes (
		id text PRIMARY KEY,
		ek_public bytea NOT NULL,
		ek_cert bytea,
		ak_public bytea NOT NULL,
		ak_name bytea NOT NULL,
		state text NOT NULL,
		challenge_hash bytea,
		challenge_expires bigint,
		last_attestation text,
		last_policy text,
		last_allow boolean,
		last_time bigint,
		created bigint NOT NULL,
		updated bigint NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS nonces (
		hash bytea PRIMARY KEY,
		node text NOT NULL,
		expires bigint NOT NULL,
		used bigint)`,
	`CREATE INDEX IF NOT EXISTS nonces_expires ON nonces (expires)`,
	// Version 2: a node's nonces by age, for the per-node limit.
	`CREATE INDEX IF NOT EXISTS nonces_node ON nonces (node, expires)`,
	`CREATE TABLE IF NOT EXISTS attestations (
		id text PRIMARY KEY,
		node text NOT NULL,
		policy text NOT NULL,
		allow boolean NOT NULL,
		reasons text[],
		sandbox_id text NOT NULL,
		guest_public_key bytea,
		secrets text[],
		created bigint NOT NULL,
		release_expires bigint NOT NULL,
		released bigint NOT NULL DEFAULT 0)`,
	`CREATE TABLE IF NOT EXISTS secrets (
		name text PRIMARY KEY,
		version bigint NOT NULL,
		size integer NOT NULL,
		description text NOT NULL,
		created bigint NOT NULL,
		updated bigint NOT NULL,
		ciphertext bytea NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS audit (
		seq bigint PRIMARY KEY,
		time bigint NOT NULL,
		kind text NOT NULL,
		node text NOT NULL,
		subject text NOT NULL,
		details bytea NOT NULL,
		prev bytea NOT NULL,
		hash bytea NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS audit_head (
		id integer PRIMARY KEY CHECK (id = 1),
		seq bigint NOT NULL,
		hash bytea NOT NULL)`,
	`INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, $1) ON CONFLICT DO NOTHING`,
	// Version 3: the seal the audit log was purged through (seq 0: never).
	`CREATE TABLE IF NOT EXISTS audit_seal (
		id integer PRIMARY KEY CHECK (id = 1),
		seq bigint NOT NULL,
		hash bytea NOT NULL,
		sig bytea NOT NULL)`,
	`INSERT INTO audit_seal (id, seq, hash, sig) VALUES (1, 0, $1, '') ON CONFLICT DO NOTHING`,
	// Version 4: what replicas share about the vault (docs/attestd.md
	// "Replicas"): the master key's check value and join requests.
	`CREATE TABLE IF NOT EXISTS vault_check (
		id integer PRIMARY KEY CHECK (id = 1),
		value bytea NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS replica_joins (
		id text PRIMARY KEY,
		node text NOT NULL,
		public_key bytea NOT NULL,
		state text NOT NULL,
		wrapped bytea,
		approved_by text NOT NULL,
		created bigint NOT NULL,
		updated bigint NOT NULL)`,
	// Version 5: each node's verified launch log prefix and its records
	// (launchlog.go; docs/eventlog.md "Incremental logs").
	`CREATE TABLE IF NOT EXISTS launch_prefix (
		node text PRIMARY KEY,
		reset_count bigint NOT NULL,
		restart_count bigint NOT NULL,
		clock bigint NOT NULL,
		events bigint NOT NULL,
		pcr bytea NOT NULL,
		updated bigint NOT NULL)`,
	`CREATE TABLE IF NOT EXISTS launch_records (
		node text NOT NULL,
		recnum bigint NOT NULL,
		sandbox_id text NOT NULL,
		digest bytea NOT NULL,
		pcr bytea NOT NULL,
		PRIMARY KEY (node, recnum))`,
	`CREATE INDEX IF NOT EXISTS launch_records_sandbox ON launch_records (node, sandbox_id, recnum)`,
	// Version 6: continuous attestation (sandboxes.go; docs/attestd.md
	// "Continuous attestation"): each kept sandbox's state, and each
	// node's decisions in order.
	`CREATE TABLE IF NOT EXISTS sandbox_states (
		node text NOT NULL,
		sandbox_id text NOT NULL,
		data bytea NOT NULL,
		PRIMARY KEY (node, sandbox_id))`,
	`CREATE TABLE IF NOT EXISTS decisions (
		node text NOT NULL,
		seq bigint NOT NULL,
		data bytea NOT NULL,
		PRIMARY KEY (node, seq))`,
	// Version 7: which launch records are END records (a sandbox that
	// ended; docs/eventlog.md "END records"). Every record stored before
	// is a launch event.
	`ALTER TABLE launch_records ADD COLUMN IF NOT EXISTS ended boolean NOT NULL DEFAULT false`,
}

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

var _ Store = (*pgStore)(nil)

// OpenPostgres connects to the PostgreSQL database named by dsn and creates
// or migrates the schema (serialised between replicas by an advisory lock).
func OpenPostgres(ctx context.Context, dsn string, opts Options) (Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: PostgreSQL DSN does not parse (want postgres://user@host/db?...): %w", ErrInvalid)
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
		perNode: opts.maxNoncesPerNode()}
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
	return classified(s), nil
}

func (s *pgStore) migrate(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(pgLockKey)); err != nil {
			return fmt.Errorf("locking for migration: %w", err)
		}
		if _, err := tx.Exec(ctx, pgSchema[0]); err != nil {
			return fmt.Errorf("creating schema: %w", err)
		}
		var v int
		err := tx.QueryRow(ctx, `SELECT version FROM bulwark_schema`).Scan(&v)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("reading schema version: %w", err)
		case v > pgSchemaVersion:
			return fmt.Errorf("database schema version %d is newer than this attestd understands (%d): upgrade attestd", v, pgSchemaVersion)
		case v == pgSchemaVersion:
			return nil
		}
		for _, q := range pgSchema[1:] {
			var args []any
			if bytes.Contains([]byte(q), []byte("$1")) {
				args = append(args, genesisPrev)
			}
			if _, err := tx.Exec(ctx, q, args...); err != nil {
				return fmt.Errorf("creating schema: %w", err)
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM bulwark_schema`); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO bulwark_schema (version) VALUES ($1)`, pgSchemaVersion)
		return err
	})
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
		return ErrClosed
	}
	return nil
}

func isUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// ---- nodes ----

const nodeCols = `id, ek_public, ek_cert, ak_public, ak_name, state, challenge_hash, challenge_expires, last_attestation, last_policy, last_allow, last_time, created, updated`

func scanNode(row pgx.Row) (Node, error) {
	var r nodeRec
	var chExp, lvTime *int64
	var lvID, lvPolicy *string
	var lvAllow *bool
	if err := row.Scan(&r.ID, &r.EKPublic, &r.EKCert, &r.AKPublic, &r.AKName, &r.State, &r.ChHash, &chExp, &lvID, &lvPolicy, &lvAllow, &lvTime, &r.Created, &r.Updated); err != nil {
		return Node{}, err
	}
	if chExp != nil {
		r.ChExpires = *chExp
	}
	if lvID != nil {
		r.LVID = *lvID
		if lvPolicy != nil {
			r.LVPolicy = *lvPolicy
		}
		if lvAllow != nil {
			r.LVAllow = *lvAllow
		}
		if lvTime != nil {
			r.LVTime = *lvTime
		}
	}
	return r.node(), nil
}

// nodeArgs returns the column values of n in nodeCols order.
func nodeArgs(n *Node, created, updated int64) []any {
	r := toNodeRec(n)
	var chExp, lvTime *int64
	var lvID, lvPolicy *string
	var lvAllow *bool
	if r.ChHash != nil {
		chExp = &r.ChExpires
	}
	if r.LVID != "" {
		lvID, lvPolicy, lvAllow, lvTime = &r.LVID, &r.LVPolicy, &r.LVAllow, &r.LVTime
	}
	return []any{r.ID, r.EKPublic, r.EKCert, r.AKPublic, r.AKName, string(r.State), r.ChHash, chExp, lvID, lvPolicy, lvAllow, lvTime, created, updated}
}

func (s *pgStore) CreateNode(ctx context.Context, n Node) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := validateNode(&n); err != nil {
		return err
	}
	now := nanos(s.now())
	tag, err := s.pool.Exec(ctx, `INSERT INTO nodes (`+nodeCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) ON CONFLICT (id) DO NOTHING`, nodeArgs(&n, now, now)...)
	if err != nil {
		return fmt.Errorf("store: creating node %s: %w", n.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("node %s: %w", n.ID, ErrConflict)
	}
	return nil
}

func (s *pgStore) GetNode(ctx context.Context, id string) (Node, error) {
	if err := s.check(); err != nil {
		return Node{}, err
	}
	n, err := scanNode(s.pool.QueryRow(ctx, `SELECT `+nodeCols+` FROM nodes WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Node{}, fmt.Errorf("node %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Node{}, fmt.Errorf("store: reading node %s: %w", id, err)
	}
	return n, nil
}

func (s *pgStore) UpdateNode(ctx context.Context, id string, fn func(*Node) error) (Node, error) {
	if err := s.check(); err != nil {
		return Node{}, err
	}
	var out Node
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		old, err := scanNode(tx.QueryRow(ctx, `SELECT `+nodeCols+` FROM nodes WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("node %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("store: reading node %s: %w", id, err)
		}
		n := old
		n.EKPublic = bytes.Clone(old.EKPublic)
		if err := callUpdate(fn, &n); err != nil {
			return err
		}
		if n.ID != old.ID || !bytes.Equal(n.EKPublic, old.EKPublic) {
			return fmt.Errorf("node %s: UpdateNode may not change ID or EKPublic: %w", id, ErrInvalid)
		}
		if err := validateNode(&n); err != nil {
			return err
		}
		args := nodeArgs(&n, nanos(old.CreatedAt), nanos(s.now()))
		if _, err := tx.Exec(ctx, `UPDATE nodes SET (`+nodeCols+`) = ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) WHERE id = $1`, args...); err != nil {
			return fmt.Errorf("store: updating node %s: %w", id, err)
		}
		n.CreatedAt, n.UpdatedAt = fromNanos(args[12].(int64)), fromNanos(args[13].(int64))
		out = n
		return nil
	})
	return out, err
}

// callUpdate runs an UpdateNode callback, turning a panic into an error.
func callUpdate(fn func(*Node) error, n *Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store: node update panicked: %v", r)
		}
	}()
	return fn(n)
}

func (s *pgStore) ListNodes(ctx context.Context) ([]Node, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+nodeCols+` FROM nodes ORDER BY id COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("store: listing nodes: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Node, error) { return scanNode(r) })
	if err != nil {
		return nil, fmt.Errorf("store: listing nodes: %w", err)
	}
	return out, nil
}

func (s *pgStore) DeleteNode(ctx context.Context, id string) error {
	if err := s.check(); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM nodes WHERE id = $1`, id)
		if err != nil {
			return fmt.Errorf("store: deleting node %s: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("node %s: %w", id, ErrNotFound)
		}
		for _, q := range []string{`DELETE FROM launch_prefix WHERE node = $1`, `DELETE FROM launch_records WHERE node = $1`,
			`DELETE FROM sandbox_states WHERE node = $1`, `DELETE FROM decisions WHERE node = $1`} {
			if _, err := tx.Exec(ctx, q, id); err != nil {
				return fmt.Errorf("store: deleting node %s: %w", id, err)
			}
		}
		return nil
	})
}

// ---- nonces ----

// nonceKey is a nonce's row key: its SHA-256, so the table never holds a
// nonce itself and lookups take the same time whatever its value.
func nonceKey(v []byte) []byte {
	sum := sha256.Sum256(v)
	return sum[:]
}

func (s *pgStore) IssueNonce(ctx context.Context, n Nonce) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := validateNonce(&n); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO nonces (hash, node, expires) VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING`, nonceKey(n.Value), n.NodeID, nanos(n.Expires))
	if err != nil {
		return fmt.Errorf("store: issuing nonce: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("nonce: %w", ErrConflict)
	}
	// Keep the node's newest (replicas issuing at once may each trim; the
	// bound holds either way).
	_, err = s.pool.Exec(ctx, `DELETE FROM nonces WHERE hash IN (
		SELECT hash FROM nonces WHERE node = $1 ORDER BY expires DESC, hash OFFSET $2)`, n.NodeID, s.perNode)
	if err != nil {
		return fmt.Errorf("store: trimming the node's nonces: %w", err)
	}
	return nil
}

func (s *pgStore) ConsumeNonce(ctx context.Context, value []byte, nodeID string, now time.Time) error {
	if err := s.check(); err != nil {
		return err
	}
	if limits.CheckNonceSize(len(value)) != nil {
		return fmt.Errorf("nonce of %d bytes: %w", len(value), ErrNonceUnknown)
	}
	key, t := nonceKey(value), nanos(now)
	// The one atomic step: of concurrent callers, one UPDATE matches.
	tag, err := s.pool.Exec(ctx, `UPDATE nonces SET used = $3 WHERE hash = $1 AND node = $2 AND used IS NULL AND expires > $3`, key, nodeID, t)
	if err != nil {
		return fmt.Errorf("store: consuming nonce: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	// Say why it did not match.
	var node string
	var expires int64
	var used *int64
	err = s.pool.QueryRow(ctx, `SELECT node, expires, used FROM nonces WHERE hash = $1`, key).Scan(&node, &expires, &used)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNonceUnknown
	}
	if err != nil {
		return fmt.Errorf("store: reading nonce: %w", err)
	}
	if err := checkNonce(false, node == nodeID, used != nil, t >= expires); err != nil {
		return err
	}
	return fmt.Errorf("store: nonce neither consumed nor rejected: %w", ErrConflict)
}

// ---- attestations ----

const attCols = `id, node, policy, allow, reasons, sandbox_id, guest_public_key, secrets, created, release_expires, released`

func scanAtt(row pgx.Row) (Attestation, error) {
	var r attRec
	if err := row.Scan(&r.ID, &r.Node, &r.Policy, &r.Allow, &r.Reasons, &r.Sandbox, &r.GuestPub, &r.Secrets, &r.Created, &r.RelExp, &r.Released); err != nil {
		return Attestation{}, err
	}
	return r.att(), nil
}

func (s *pgStore) RecordAttestation(ctx context.Context, a Attestation) (AuditRecord, error) {
	if err := s.check(); err != nil {
		return AuditRecord{}, err
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = s.now()
	}
	e, err := prepareAttestation(&a)
	if err != nil {
		return AuditRecord{}, err
	}
	r := toAttRec(&a)
	op := &pgAuditOp{att: &r, entry: e}
	if err := s.submit(ctx, op); err != nil {
		return AuditRecord{}, err
	}
	return op.rec, op.err
}

func (s *pgStore) GetAttestation(ctx context.Context, id string) (Attestation, error) {
	if err := s.check(); err != nil {
		return Attestation{}, err
	}
	a, err := scanAtt(s.pool.QueryRow(ctx, `SELECT `+attCols+` FROM attestations WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Attestation{}, fmt.Errorf("attestation %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Attestation{}, fmt.Errorf("store: reading attestation %s: %w", id, err)
	}
	return a, nil
}

func (s *pgStore) ConsumeRelease(ctx context.Context, id string, now time.Time) (Attestation, AuditRecord, error) {
	if err := s.check(); err != nil {
		return Attestation{}, AuditRecord{}, err
	}
	if now.IsZero() {
		return Attestation{}, AuditRecord{}, fmt.Errorf("release of attestation %s needs a time: %w", id, ErrInvalid)
	}
	// The audit batcher consumes the window and appends the record in the
	// transaction that holds the audit head lock.
	op := &pgAuditOp{release: &pgRelease{id: id, now: now}}
	if err := s.submit(ctx, op); err != nil {
		return Attestation{}, AuditRecord{}, err
	}
	if op.err != nil {
		return Attestation{}, AuditRecord{}, op.err
	}
	return op.release.att, op.rec, nil
}

// consumeReleaseIn consumes op's release window in tx and sets op.entry to
// its audit record, or sets op.err (nothing written) when the window is not
// open. It returns only the errors that fail the transaction.
func (s *pgStore) consumeReleaseIn(ctx context.Context, tx pgx.Tx, op *pgAuditOp) error {
	rel := op.release
	t := nanos(rel.now)
	a, err := scanAtt(tx.QueryRow(ctx, `SELECT `+attCols+` FROM attestations WHERE id = $1 FOR UPDATE`, rel.id))
	if errors.Is(err, pgx.ErrNoRows) {
		op.err = fmt.Errorf("attestation %s: %w", rel.id, ErrNotFound)
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: reading attestation %s: %w", rel.id, err)
	}
	if err := checkRelease(rel.id, a.Allow && !a.ReleaseExpires.IsZero(), !a.ReleasedAt.IsZero(), t >= nanos(a.ReleaseExpires)); err != nil {
		op.err = err
		return nil
	}
	a.ReleasedAt = fromNanos(t)
	e, err := releaseEntry(&a, rel.now)
	if err != nil {
		op.err = err
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE attestations SET released = $2 WHERE id = $1`, rel.id, t); err != nil {
		return fmt.Errorf("store: consuming release of %s: %w", rel.id, err)
	}
	rel.att, op.entry = a, e
	return nil
}

// ---- secrets ----

func (s *pgStore) PutSecret(ctx context.Context, sec Secret, prevVersion uint64) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := validateSecret(&sec, prevVersion); err != nil {
		return err
	}
	now := nanos(s.now())
	created, updated := nanos(sec.CreatedAt), nanos(sec.UpdatedAt)
	if created == 0 {
		created = now
	}
	if updated == 0 {
		updated = now
	}
	var tag pgconn.CommandTag
	var err error
	if prevVersion == 0 {
		tag, err = s.pool.Exec(ctx, `INSERT INTO secrets (name, version, size, description, created, updated, ciphertext)
			VALUES ($1, 1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING`, sec.Name, sec.Size, sec.Description, created, updated, sec.Ciphertext)
	} else {
		tag, err = s.pool.Exec(ctx, `UPDATE secrets SET version = $2, size = $3, description = $4, updated = $5, ciphertext = $6
			WHERE name = $1 AND version = $7`, sec.Name, int64(sec.Version), sec.Size, sec.Description, updated, sec.Ciphertext, int64(prevVersion))
	}
	if err != nil {
		return fmt.Errorf("store: writing secret %q: %w", sec.Name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("secret %q is not at version %d: %w", sec.Name, prevVersion, ErrConflict)
	}
	return nil
}

func (s *pgStore) GetSecret(ctx context.Context, name string) (Secret, error) {
	if err := s.check(); err != nil {
		return Secret{}, err
	}
	var r secretRec
	var v int64
	err := s.pool.QueryRow(ctx, `SELECT name, version, size, description, created, updated, ciphertext FROM secrets WHERE name = $1`, name).
		Scan(&r.Name, &v, &r.Size, &r.Desc, &r.Created, &r.Updated, &r.CT)
	if errors.Is(err, pgx.ErrNoRows) {
		return Secret{}, fmt.Errorf("secret %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Secret{}, fmt.Errorf("store: reading secret %q: %w", name, err)
	}
	r.Version = uint64(v)
	return Secret{SecretMeta: r.meta(), Ciphertext: r.CT}, nil
}

func (s *pgStore) ListSecrets(ctx context.Context) ([]SecretMeta, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT name, version, size, description, created, updated FROM secrets ORDER BY name COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("store: listing secrets: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (SecretMeta, error) {
		var r secretRec
		var v int64
		err := row.Scan(&r.Name, &v, &r.Size, &r.Desc, &r.Created, &r.Updated)
		r.Version = uint64(v)
		return r.meta(), err
	})
	if err != nil {
		return nil, fmt.Errorf("store: listing secrets: %w", err)
	}
	return out, nil
}

func (s *pgStore) DeleteSecret(ctx context.Context, name string) error {
	if err := s.check(); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM secrets WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("store: deleting secret %q: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("secret %q: %w", name, ErrNotFound)
	}
	return nil
}

// ---- audit ----

func (s *pgStore) AppendAudit(ctx context.Context, e AuditEntry) (AuditRecord, error) {
	if err := s.check(); err != nil {
		return AuditRecord{}, err
	}
	if err := validateAuditEntry(&e, s.now); err != nil {
		return AuditRecord{}, err
	}
	op := &pgAuditOp{entry: e}
	if err := s.submit(ctx, op); err != nil {
		return AuditRecord{}, err
	}
	return op.rec, op.err
}

const auditCols = `seq, time, kind, node, subject, details, prev, hash`

func scanAudit(row pgx.Row) (AuditRecord, error) {
	var r auditRec
	var seq int64
	if err := row.Scan(&seq, &r.Time, &r.Kind, &r.Node, &r.Subject, &r.Details, &r.Prev, &r.Hash); err != nil {
		return AuditRecord{}, err
	}
	r.Seq = uint64(seq)
	return r.record(), nil
}

func (s *pgStore) ReadAudit(ctx context.Context, after uint64, limit int) ([]AuditRecord, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if limit < 1 || limit > 1000 {
		return nil, fmt.Errorf("audit read limit %d: want 1..1000: %w", limit, ErrInvalid)
	}
	q := `SELECT ` + auditCols + ` FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2`
	if after == 0 { // every row, even one whose seq was set to 0 or below
		q = `SELECT ` + auditCols + ` FROM audit WHERE $1::bigint = 0 ORDER BY seq LIMIT $2`
	}
	rows, err := s.pool.Query(ctx, q, int64(after), limit)
	if err != nil {
		return nil, fmt.Errorf("store: reading audit log: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditRecord, error) { return scanAudit(r) })
	if err != nil {
		return nil, fmt.Errorf("store: reading audit log: %w", err)
	}
	return out, nil
}

// AuditHead returns the record audit_head points at. If that record is
// missing or its hash differs from the head's, it reports ErrAuditChain:
// the log was cut or rewritten at its end.
func (s *pgStore) AuditHead(ctx context.Context) (AuditRecord, error) {
	if err := s.check(); err != nil {
		return AuditRecord{}, err
	}
	var seq int64
	var hash []byte
	if err := s.pool.QueryRow(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &hash); err != nil {
		return AuditRecord{}, fmt.Errorf("store: reading audit head: %w", err)
	}
	if seq == 0 {
		return AuditRecord{}, fmt.Errorf("audit log is empty: %w", ErrNotFound)
	}
	r, err := scanAudit(s.pool.QueryRow(ctx, `SELECT `+auditCols+` FROM audit WHERE seq = $1`, seq))
	if errors.Is(err, pgx.ErrNoRows) {
		return AuditRecord{}, &ChainError{Position: uint64(seq), Reason: "the head record is missing (records removed from the end)"}
	}
	if err != nil {
		return AuditRecord{}, fmt.Errorf("store: reading audit head: %w", err)
	}
	if !bytes.Equal(r.Hash, hash) {
		return AuditRecord{}, &ChainError{Position: uint64(seq), Seq: r.Seq, Reason: "the head record's hash differs from the recorded head"}
	}
	return r, nil
}

// ---- purge ----

func (s *pgStore) PurgeExpired(ctx context.Context, now time.Time) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	t := nanos(now)
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM nonces WHERE expires <= $1`, t)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		tag, err = tx.Exec(ctx, `UPDATE nodes SET challenge_hash = NULL, challenge_expires = NULL WHERE challenge_hash IS NOT NULL AND challenge_expires <= $1`, t)
		if err != nil {
			return err
		}
		n += tag.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: purging: %w", err)
	}
	return int(n), nil
}

// ---- retention ----

func (s *pgStore) AuditSeal(ctx context.Context) (Seal, error) {
	if err := s.check(); err != nil {
		return Seal{}, err
	}
	var seq int64
	var out Seal
	if err := s.pool.QueryRow(ctx, `SELECT seq, hash, sig FROM audit_seal WHERE id = 1`).Scan(&seq, &out.Hash, &out.Sig); err != nil {
		return Seal{}, fmt.Errorf("store: reading audit seal: %w", err)
	}
	if seq == 0 {
		return Seal{}, fmt.Errorf("audit log never purged: %w", ErrNotFound)
	}
	out.Seq = uint64(seq)
	return out, nil
}

// PurgeSealed locks the audit_seal row (replicas purging at once take
// turns), never the audit head: appends go on meanwhile.
func (s *pgStore) PurgeSealed(ctx context.Context, seal Seal, limit int) (Purged, error) {
	if err := s.check(); err != nil {
		return Purged{}, err
	}
	if err := validatePurge(seal, limit); err != nil {
		return Purged{}, err
	}
	var out Purged
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out = Purged{}
		var oldSeq, headSeq int64
		var oldHash []byte
		if err := tx.QueryRow(ctx, `SELECT seq, hash FROM audit_seal WHERE id = 1 FOR UPDATE`).Scan(&oldSeq, &oldHash); err != nil {
			return fmt.Errorf("store: locking audit seal: %w", err)
		}
		if err := tx.QueryRow(ctx, `SELECT seq FROM audit_head WHERE id = 1`).Scan(&headSeq); err != nil {
			return fmt.Errorf("store: reading audit head: %w", err)
		}
		var atSeal []byte
		err := tx.QueryRow(ctx, `SELECT hash FROM audit WHERE seq = $1`, int64(seal.Seq)).Scan(&atSeal)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("store: reading audit record %d: %w", seal.Seq, err)
		}
		isNew, err := checkSeal(seal, Checkpoint{Seq: uint64(oldSeq), Hash: oldHash}, uint64(headSeq), atSeal)
		if err != nil {
			return err
		}
		if isNew {
			if _, err := tx.Exec(ctx, `UPDATE audit_seal SET seq = $1, hash = $2, sig = $3 WHERE id = 1`, int64(seal.Seq), seal.Hash, seal.Sig); err != nil {
				return fmt.Errorf("store: writing audit seal: %w", err)
			}
		}
		rows, err := tx.Query(ctx, `DELETE FROM audit WHERE seq IN (
			SELECT seq FROM audit WHERE seq <= $1 ORDER BY seq LIMIT $2) RETURNING kind, subject`, int64(seal.Seq), limit)
		if err != nil {
			return fmt.Errorf("store: purging audit records: %w", err)
		}
		var ids []string
		for rows.Next() {
			var kind, subject string
			if err := rows.Scan(&kind, &subject); err != nil {
				rows.Close()
				return fmt.Errorf("store: purging audit records: %w", err)
			}
			out.Audit++
			if AuditKind(kind) == KindVerdict {
				ids = append(ids, subject)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("store: purging audit records: %w", err)
		}
		if len(ids) > 0 {
			tag, err := tx.Exec(ctx, `DELETE FROM attestations WHERE id = ANY($1)`, ids)
			if err != nil {
				return fmt.Errorf("store: purging attestations: %w", err)
			}
			out.Attestations = int(tag.RowsAffected())
		}
		return tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM audit WHERE seq <= $1)`, int64(seal.Seq)).Scan(&out.More)
	})
	if err != nil {
		return Purged{}, err
	}
	return out, nil
}
