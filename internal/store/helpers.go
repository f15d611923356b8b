package store

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// IsPostgresURL reports whether dsn is a PostgreSQL URL: it starts with
// "postgres://" or "postgresql://".
func IsPostgresURL(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// errNotPostgresURL is what CheckDSN returns. It never repeats the DSN,
// which may carry a password.
var errNotPostgresURL = fmt.Errorf("store: the PostgreSQL DSN must be a postgres:// or postgresql:// URL, e.g. postgres://attestd@db.example/attestd?sslmode=verify-full (key=value connection strings are not accepted): %w", ErrInvalid)

// CheckDSN returns nil when dsn is a postgres:// or postgresql:// URL and
// otherwise an ErrInvalid error that does not repeat dsn (it may hold a
// password).
func CheckDSN(dsn string) error {
	if !IsPostgresURL(dsn) {
		return errNotPostgresURL
	}
	return nil
}

// OpenDSN opens the PostgreSQL store at dsn, which must be a postgres:// or
// postgresql:// URL (CheckDSN); anything else is refused, never taken for
// a directory.
func OpenDSN(ctx context.Context, dsn string, opts Options) (Store, error) {
	if err := CheckDSN(dsn); err != nil {
		return nil, err
	}
	return OpenPostgres(ctx, dsn, opts)
}

// Open opens the store named by target: a "postgres://" or "postgresql://"
// URL selects PostgreSQL (schema created or migrated on open); a path is
// the data directory of the embedded store (created 0700 if missing).
// A target that looks like some other connection string (a URL of another
// scheme, or libpq key=value pairs) is refused with ErrInvalid rather than
// taken for a directory name. Callers that know which store they want
// should use OpenDSN or OpenEmbedded.
func Open(ctx context.Context, target string, opts Options) (Store, error) {
	if IsPostgresURL(target) {
		return OpenPostgres(ctx, target, opts)
	}
	if looksLikeConnString(target) {
		return nil, fmt.Errorf("store: the store target looks like a connection string but is not a postgres:// or postgresql:// URL (key=value connection strings and other schemes are not accepted): %w", ErrInvalid)
	}
	return OpenEmbedded(ctx, target, opts)
}

// looksLikeConnString reports whether target looks like a connection
// string rather than a path: it starts with a URL scheme ("mysql://",
// "postgres:/...", "user:password@host") or holds key=value pairs.
func looksLikeConnString(target string) bool {
	return urlScheme.MatchString(target) || strings.Contains(target, "=")
}

var urlScheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)

// ConsumeChallenge completes enrollment: if node id has a pending challenge,
// unexpired at now, whose secret hash equals SHA-256(secret) (compared in
// constant time), the challenge is cleared and the node becomes NodeActive,
// atomically. Errors: ErrNotFound, ErrChallenge (no challenge or wrong
// secret), ErrChallengeExpired, or ErrChallenge for a revoked node.
func ConsumeChallenge(ctx context.Context, n Nodes, id string, secret []byte, now time.Time) (Node, error) {
	sum := sha256.Sum256(secret)
	return n.UpdateNode(ctx, id, func(node *Node) error {
		if node.State == NodeRevoked {
			return fmt.Errorf("node %s is revoked: %w", id, ErrChallenge)
		}
		c := node.Challenge
		if c == nil {
			return fmt.Errorf("node %s has no pending credential challenge: %w", id, ErrChallenge)
		}
		if !now.Before(c.Expires) {
			return fmt.Errorf("credential challenge of node %s: %w", id, ErrChallengeExpired)
		}
		if subtle.ConstantTimeCompare(c.SecretHash, sum[:]) != 1 {
			return fmt.Errorf("credential challenge of node %s: %w", id, ErrChallenge)
		}
		node.Challenge = nil
		node.State = NodeActive
		return nil
	})
}
