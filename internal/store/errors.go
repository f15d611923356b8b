package store

import (
	"errors"

	"github.com/bulwark-project/bulwark/enclave/vaultstore"
)

// The error classes callers branch on (attestd maps them to gRPC codes at its
// server edge). Implementations wrap them with %w and short context; test
// with errors.Is.
var (
	// ErrNotFound: the node, attestation, secret or audit head does not
	// exist. It is the vault's class (vaultstore.ErrNotFound), so the
	// vault, which does not import the store, can branch on it.
	ErrNotFound = vaultstore.ErrNotFound
	// ErrConflict: it exists already, or a concurrent writer changed it
	// first (secret version mismatch). The vault's class, as ErrNotFound.
	ErrConflict = vaultstore.ErrConflict
	// ErrInvalid: a caller passed a malformed value (bad id, missing field,
	// over a size limit). The wrapping error names the field.
	ErrInvalid = errors.New("store: invalid argument")

	// ErrNonceUnknown: the nonce was never issued to this node (or purged).
	ErrNonceUnknown = errors.New("store: nonce unknown")
	// ErrNonceUsed: the nonce was consumed before: a replay.
	ErrNonceUsed = errors.New("store: nonce already used")
	// ErrNonceExpired: the nonce expired before it was presented.
	ErrNonceExpired = errors.New("store: nonce expired")

	// ErrReleaseDenied: the attestation grants no release (deny verdict or
	// no secrets).
	ErrReleaseDenied = errors.New("store: attestation grants no release")
	// ErrReleaseUsed: the release window was consumed before.
	ErrReleaseUsed = errors.New("store: release already done")
	// ErrReleaseExpired: the release window has closed.
	ErrReleaseExpired = errors.New("store: release window expired")

	// ErrChallenge: no pending credential challenge, or the secret does not
	// match (ConsumeChallenge); ErrChallengeExpired: it expired.
	ErrChallenge        = errors.New("store: credential challenge failed")
	ErrChallengeExpired = errors.New("store: credential challenge expired")

	// ErrAuditChain: the audit chain does not verify (see *ChainError).
	ErrAuditChain = errors.New("store: audit chain broken")

	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")

	// ErrUnavailable: the storage underneath failed, not the request: the
	// disk is full or failing (ENOSPC, EIO, EROFS), or PostgreSQL cannot be
	// reached or is shutting down. The same call may succeed later or on
	// another replica; attestd answers it with codes.Unavailable. Every
	// Store the Open functions return classifies its errors this way (see
	// Unavailable); the wrapped error keeps its message and chain.
	ErrUnavailable = errors.New("store: unavailable")
)
