// Package store is attestd's persistent state: enrolled nodes, quote nonces,
// attestation verdicts and their release windows, vault ciphertexts, and the
// hash-chained audit log. Two implementations share one API and one
// conformance suite (internal/store/storetest): an embedded store (bbolt, one
// data directory, the default) and PostgreSQL (selected by a postgres:// DSN,
// shared by several attestd replicas).
//
// Every operation that must happen at most once — consuming a nonce, a
// credential challenge or a release window — is atomic in both
// implementations, across goroutines and, on PostgreSQL, across replicas.
// The errors callers branch on are the sentinels in errors.go.
package store

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/bulwark-project/bulwark/enclave/vaultstore"
)

// Store is attestd's storage. Implementations are safe for concurrent use.
// Close when done.
//
// Times passed in are normalised to UTC with microsecond precision (what
// PostgreSQL keeps), so a value read back compares equal with time.Equal to
// the normalised value written.
type Store interface {
	Nodes
	Nonces
	Attestations
	Secrets
	Audit
	Retention
	Replicas
	LaunchLogs
	Sandboxes

	// PurgeExpired deletes nonces and clears pending credential challenges
	// that expired at or before now. Consumed nonces are kept until they
	// expire, so a replay is reported as ErrNonceUsed until then (and as
	// ErrNonceExpired or ErrNonceUnknown after). Attestations and audit
	// records are purged only by PurgeSealed (see Retain). It returns how
	// many entries it removed.
	PurgeExpired(ctx context.Context, now time.Time) (int, error)

	// Close releases the store's resources.
	Close() error
}

// Options configure Open. The zero value is usable.
type Options struct {
	// Logger receives operational messages (never secret values). nil: discard.
	Logger *slog.Logger
	// Now is the clock for timestamps the store fills in itself (audit record
	// times when the entry has none, created/updated times). nil: time.Now.
	Now func() time.Time
	// OnCommit, when set, is told of every group commit of the embedded
	// store: how many writes it carried and how long the commit took (the
	// two fdatasyncs included). attestd exports both as metrics.
	OnCommit func(writes int, took time.Duration)
	// MaxNoncesPerNode bounds one node's nonces (see
	// DefaultMaxNoncesPerNode, used when 0).
	MaxNoncesPerNode int
}

// NoncesPerNode is o.MaxNoncesPerNode or, when not set, the default.
func (o Options) NoncesPerNode() int {
	if o.MaxNoncesPerNode > 0 {
		return o.MaxNoncesPerNode
	}
	return DefaultMaxNoncesPerNode
}

// NodeState is where a node is in enrollment.
type NodeState string

const (
	// NodeEnrolled: EK and AK are registered and a credential challenge is
	// pending; the node's quotes are not trusted yet.
	NodeEnrolled NodeState = "enrolled"
	// NodeActive: the node proved (ActivateCredential) that its AK lives in
	// the TPM of its EK; its quotes may be verified.
	NodeActive NodeState = "active"
	// NodeRevoked: an admin revoked the node; nothing from it is trusted.
	NodeRevoked NodeState = "revoked"
)

// Node is one enrolled host (one TPM).
type Node struct {
	ID       string    // NodeID(EKPublic)
	EKPublic []byte    // TPMT_PUBLIC wire bytes
	EKCert   []byte    // DER, nil when the TPM has none
	AKPublic []byte    // TPMT_PUBLIC wire bytes
	AKName   []byte    // TPM name of the AK (nameAlg || digest)
	State    NodeState // see NodeState
	// Challenge is the pending credential challenge, nil when none.
	Challenge *Challenge
	// LastVerdict is the most recent attestation of this node, nil if none.
	// RecordAttestation sets it.
	LastVerdict *LastVerdict
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// Challenge is a pending MakeCredential challenge. Only a hash of the
// credential secret is stored.
type Challenge struct {
	SecretHash []byte // SHA-256 of the secret sealed with MakeCredential
	Expires    time.Time
}

// LastVerdict summarises the latest attestation of a node.
type LastVerdict struct {
	AttestationID string
	Policy        string
	Allow         bool
	Time          time.Time
}

// Nodes stores enrolled hosts.
type Nodes interface {
	// CreateNode stores a new node. ErrConflict if n.ID exists; ErrInvalid if
	// n.ID is not NodeID(n.EKPublic) or a required field is missing.
	// CreatedAt/UpdatedAt are set by the store.
	CreateNode(ctx context.Context, n Node) error
	// GetNode returns the node, or ErrNotFound.
	GetNode(ctx context.Context, id string) (Node, error)
	// UpdateNode reads the node, calls fn on a copy and, if fn returns nil,
	// writes the copy back, all in one transaction (a row lock on
	// PostgreSQL), so concurrent updates of one node are serialised. fn may
	// return an error (returned unchanged) to abort without writing; it must
	// not change ID or EKPublic (ErrInvalid), must be quick, and must not
	// call the store (it runs inside the write transaction). It returns the node as written.
	// ErrNotFound if the node does not exist.
	UpdateNode(ctx context.Context, id string, fn func(*Node) error) (Node, error)
	// ListNodes returns all nodes ordered by ID.
	ListNodes(ctx context.Context) ([]Node, error)
	// DeleteNode removes a node; ErrNotFound if absent.
	DeleteNode(ctx context.Context, id string) error
}

// Nonce is a quote nonce issued to one node.
type Nonce struct {
	Value   []byte // the random nonce (16..64 bytes); stored only as SHA-256
	NodeID  string
	Expires time.Time
}

// DefaultMaxNoncesPerNode bounds the nonces kept for one node (used or
// not, until they expire) unless Options.MaxNoncesPerNode says otherwise:
// issuing one more drops that node's oldest. Challenge needs only a node
// id, so without it a flood of Challenges for one node would grow the
// table until every node's Challenge was refused; with it a flood can at
// worst make that node's own oldest nonces unknown, and the node asks
// again. A host has one nonce in flight per attestation it is making.
const DefaultMaxNoncesPerNode = 64

// Nonces stores single-use quote nonces.
type Nonces interface {
	// IssueNonce records a fresh nonce, dropping the node's oldest beyond
	// the per-node limit (Options.MaxNoncesPerNode). ErrConflict if it already exists;
	// ErrInvalid for a bad length, empty node or zero expiry. The embedded
	// store (one process) keeps nonces in memory: a restart makes every
	// outstanding nonce unknown, which fails closed. PostgreSQL stores them.
	IssueNonce(ctx context.Context, n Nonce) error
	// ConsumeNonce marks the nonce used, atomically: of any number of
	// concurrent calls (from any replica) for one nonce, at most one
	// succeeds. Errors: ErrNonceUnknown (never issued, purged, or issued to
	// another node — which does not consume it), ErrNonceUsed (consumed
	// before), ErrNonceExpired (now is at or after its expiry).
	ConsumeNonce(ctx context.Context, value []byte, nodeID string, now time.Time) error
}

// Attestation is one verdict on one quote, and the window in which the
// secrets it grants may be released.
type Attestation struct {
	ID             string   // unique, chosen by the caller (e.g. random hex)
	NodeID         string   // the attested node
	Policy         string   // policy name (and version) used
	Allow          bool     // the verdict
	Reasons        []string // why (every reason for a deny)
	SandboxID      string   // from the launch event
	GuestPublicKey []byte   // from the launch event; releases wrap to it
	Secrets        []string // secret names the policy grants (allow only)
	CreatedAt      time.Time
	// ReleaseExpires ends the release window; zero when nothing may be
	// released (deny, or no secrets granted).
	ReleaseExpires time.Time
	// ReleasedAt is when ConsumeRelease consumed the window; zero before.
	ReleasedAt time.Time
}

// Attestations stores verdicts and their release windows.
type Attestations interface {
	// RecordAttestation atomically stores a, sets the node's LastVerdict and
	// appends a KindVerdict audit record (subject: a.ID; details: policy,
	// allow, reasons, sandbox id, granted secret names). It returns that
	// audit record. Only after it returns nil may the verdict be reported to
	// anyone: it is then durable. ErrConflict if a.ID exists; ErrNotFound if
	// the node does not exist; ErrInvalid for missing fields.
	RecordAttestation(ctx context.Context, a Attestation) (AuditRecord, error)
	// GetAttestation returns the attestation, or ErrNotFound.
	GetAttestation(ctx context.Context, id string) (Attestation, error)
	// ConsumeRelease consumes the release window of attestation id and
	// appends its KindRelease audit record (time: now; node and subject:
	// the attestation's; details: attestation id, sandbox id and the secret
	// names) in one transaction: both are durable, or neither is written
	// and the window stays open. At most one caller ever succeeds. It
	// returns the attestation as released and the audit record. Errors:
	// ErrNotFound, ErrReleaseDenied (deny verdict or no window),
	// ErrReleaseUsed, ErrReleaseExpired (now at/after expiry). A caller
	// does the release's work first (check with Releasable, wrap the
	// secrets) and answers with the secrets only once this returns nil: a
	// failure before it leaves the window usable, and no release is ever
	// durable without its audit record.
	ConsumeRelease(ctx context.Context, id string, now time.Time) (Attestation, AuditRecord, error)
}

// Secret (ciphertext and metadata, never plaintext) and SecretMeta (what
// may be listed) are the vault's types (enclave/vaultstore).
type (
	Secret     = vaultstore.Secret
	SecretMeta = vaultstore.SecretMeta
)

// Secrets stores vault ciphertexts.
type Secrets interface {
	// PutSecret writes s if the stored version equals prevVersion (0: the
	// secret must not exist), else ErrConflict — optimistic concurrency
	// between replicas. s.Version must be prevVersion+1 (ErrInvalid).
	// CreatedAt of an existing secret is kept; UpdatedAt is set from
	// s.UpdatedAt or the store's clock.
	PutSecret(ctx context.Context, s Secret, prevVersion uint64) error
	// GetSecret returns the secret with its ciphertext, or ErrNotFound.
	GetSecret(ctx context.Context, name string) (Secret, error)
	// ListSecrets returns metadata of all secrets ordered by name.
	ListSecrets(ctx context.Context) ([]SecretMeta, error)
	// DeleteSecret removes a secret; ErrNotFound if absent.
	DeleteSecret(ctx context.Context, name string) error
}

// AuditKind classifies audit records.
type AuditKind string

const (
	KindVerdict AuditKind = "verdict" // an attestation verdict (RecordAttestation)
	KindRelease AuditKind = "release" // secrets released to a sandbox
	KindEnroll  AuditKind = "enroll"  // enrollment, activation, revocation of a node
	KindAdmin   AuditKind = "admin"   // secret and policy changes by an admin
)

// AuditEntry is what a caller appends. Details is a JSON object (at most
// MaxAuditDetails bytes) and must never contain a secret value.
type AuditEntry struct {
	Time    time.Time // zero: the store's clock
	Kind    AuditKind
	NodeID  string // "" when not about a node
	Subject string // what the record is about: attestation id, secret name, ...
	Details json.RawMessage
}

// MaxAuditDetails bounds AuditEntry.Details.
const MaxAuditDetails = 64 << 10

// AuditRecord is one link of the audit chain. Hash = SHA-256 of the
// canonical encoding of every other field, Prev included (see
// AuditRecord.ComputeHash and docs/storage.md). Seq starts at 1; the first
// record's Prev is 32 zero bytes.
type AuditRecord struct {
	Seq     uint64
	Time    time.Time
	Kind    AuditKind
	NodeID  string
	Subject string
	Details json.RawMessage
	Prev    []byte
	Hash    []byte
}

// Audit is the append-only, hash-chained audit log. Appends are serialised
// (across replicas on PostgreSQL) so the chain stays linear.
type Audit interface {
	// AppendAudit appends one record and returns it with Seq, Prev and Hash.
	AppendAudit(ctx context.Context, e AuditEntry) (AuditRecord, error)
	// ReadAudit returns up to limit (1..1000) records with Seq > after, in
	// Seq order, exactly as stored (nothing is recomputed or repaired).
	// after 0 starts at the first record stored, whatever its Seq says, so
	// that a verifier sees every record there is (a record whose Seq was
	// changed to 0 is returned, not hidden).
	ReadAudit(ctx context.Context, after uint64, limit int) ([]AuditRecord, error)
	// AuditHead returns the last record; ErrNotFound when the log is empty.
	AuditHead(ctx context.Context) (AuditRecord, error)
	// AuditSeal returns the seal the log was last purged through (see
	// Retention), exactly as stored: the caller verifies its signature
	// (VerifySeal). ErrNotFound when the log was never purged.
	AuditSeal(ctx context.Context) (Seal, error)
}

// MaxPurgeBatch bounds the audit records PurgeSealed deletes in one
// transaction.
const MaxPurgeBatch = 10_000

// Purged counts what PurgeSealed (or Retain) deleted.
type Purged struct {
	Audit        int  // audit records
	Attestations int  // attestations named by the deleted verdict records
	More         bool // PurgeSealed: records at or before the seal remain
}

// Retention deletes old attestations and audit records (see Retain, which
// drives it, and docs/storage.md "Retention").
type Retention interface {
	// PurgeSealed deletes, in one short transaction, up to limit
	// (1..MaxPurgeBatch) of the oldest audit records, none after seal.Seq,
	// together with the attestations that the deleted verdict records
	// name, and stores seal as the log's seal (AuditSeal) in the same
	// transaction. The store does not check seal.Sig (it has no key; a
	// verifier does), but it refuses a seal that does not name a stored
	// record: a new seal must be a record before the head (which is never
	// purged, so the chain goes on from it) with that hash, else
	// ErrConflict; a seal before the stored one is ErrConflict (the log is
	// already purged further, e.g. by another replica); the stored seal
	// again continues its purge. Purged.More says whether records at or
	// before seal.Seq remain. Errors: ErrInvalid for a malformed seal or
	// limit, ErrConflict as above.
	PurgeSealed(ctx context.Context, seal Seal, limit int) (Purged, error)
}
