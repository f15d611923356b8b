package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/jackc/pgx/v5"
)

// pgSchemaVersion is the schema this code writes; older ones are migrated
// on open, newer ones refused.
const pgSchemaVersion = 8

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
	// Version 8: a decision's key (store.Decision.Key), unique per node;
	// NULL (every decision stored before) for one without a key.
	`ALTER TABLE decisions ADD COLUMN IF NOT EXISTS dkey text`,
	`CREATE UNIQUE INDEX IF NOT EXISTS decisions_key ON decisions (node, dkey)`,
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
				args = append(args, store.GenesisPrev())
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
