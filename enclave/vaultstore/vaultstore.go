// Package vaultstore defines what the vault (package enclave) keeps in
// attestd's store: sealed secrets with their metadata, replica join
// requests, and the two error classes the vault branches on. It imports
// only the standard library, so the vault and a store implementation
// (internal/store, whose Secret, Join and errors are these) agree on one
// set of types without either importing the other.
package vaultstore

import (
	"errors"
	"time"
)

// The error classes a store returns and the vault branches on (test with
// errors.Is). internal/store's ErrNotFound and ErrConflict are these.
var (
	// ErrNotFound: the secret, join request or key-check value does not
	// exist.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: it exists already, or a concurrent writer changed it
	// first (secret version mismatch, a join request not pending).
	ErrConflict = errors.New("store: conflict")
)

// Secret is one vault entry: ciphertext and metadata, never plaintext. The
// vault produces the ciphertext; the store keeps it opaque.
type Secret struct {
	SecretMeta
	Ciphertext []byte
}

// SecretMeta is what may be listed about a secret.
type SecretMeta struct {
	Name        string
	Version     uint64 // 1 on creation, +1 on each update
	Size        int    // plaintext length in bytes
	Description string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// JoinState is where a replica join request is.
type JoinState string

const (
	// JoinPending: published by the joining replica, not approved yet.
	JoinPending JoinState = "pending"
	// JoinApproved: an admin approved it and an existing replica stored
	// the vault master key wrapped to the request's public key.
	JoinApproved JoinState = "approved"
)

// Join is a new attestd replica's request for the vault master key (see
// enclave.StartJoin and docs/attestd.md "Replicas"). Nothing in it is
// secret: PublicKey is the joining replica's transport public key, and
// Wrapped the master key sealed to it, which only that replica can open.
type Join struct {
	ID         string // enclave.JoinID(PublicKey)
	Node       string // the joining replica's name, as its admin gave it
	PublicKey  []byte // the transport public key (HPKE, X25519)
	State      JoinState
	Wrapped    []byte // the wrapped master key; nil while pending
	ApprovedBy string // the admin who approved it ("" while pending)
	CreatedAt  time.Time
	UpdatedAt  time.Time
}
