package store

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bulwark-project/bulwark/tpm/limits"
)

// textOK reports whether every string is valid UTF-8 without NUL bytes:
// what both stores can keep byte for byte (JSON would replace invalid UTF-8;
// PostgreSQL text refuses it and NUL), so audit hashes stay verifiable.
func textOK(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			return false
		}
	}
	return true
}

// Limits on what the store accepts.
const (
	MaxIDLen      = 128      // attestation ids, sandbox ids
	MaxNameLen    = 256      // secret and policy names
	MaxBlob       = 16 << 10 // EK/AK public keys, AK names, EK certificates
	MaxCiphertext = 2 << 20  // one secret's ciphertext
	MaxReasons    = 256      // reasons of one verdict
)

// ValidateNode checks a node before it is stored (ErrInvalid): sizes, text,
// and that its id is the digest of its EK public key.
func ValidateNode(n *Node) error {
	switch {
	case len(n.EKPublic) == 0 || len(n.EKPublic) > MaxBlob:
		return fmt.Errorf("node EK public key is %d bytes: want 1..%d: %w", len(n.EKPublic), MaxBlob, ErrInvalid)
	case n.ID != limits.NodeID(n.EKPublic) || !textOK(string(n.State)):
		return fmt.Errorf("node id %q is not the digest of its EK public key: %w", n.ID, ErrInvalid)
	case len(n.AKPublic) == 0 || len(n.AKPublic) > MaxBlob, len(n.AKName) == 0 || len(n.AKName) > MaxBlob, len(n.EKCert) > MaxBlob:
		return fmt.Errorf("node %s: AK public key and name are required, each and the EK certificate at most %d bytes: %w", n.ID, MaxBlob, ErrInvalid)
	}
	switch n.State {
	case NodeEnrolled, NodeActive, NodeRevoked:
	default:
		return fmt.Errorf("node %s: state %q is not enrolled, active or revoked: %w", n.ID, n.State, ErrInvalid)
	}
	if c := n.Challenge; c != nil {
		if len(c.SecretHash) != 32 || c.Expires.IsZero() {
			return fmt.Errorf("node %s: a challenge needs a 32-byte secret hash and an expiry: %w", n.ID, ErrInvalid)
		}
		c.Expires = NormTime(c.Expires)
	}
	n.CreatedAt, n.UpdatedAt = NormTime(n.CreatedAt), NormTime(n.UpdatedAt)
	if v := n.LastVerdict; v != nil {
		v.Time = NormTime(v.Time)
	}
	return nil
}

// ValidateNonce checks a nonce before IssueNonce stores it (ErrInvalid).
func ValidateNonce(n *Nonce) error {
	switch {
	case limits.CheckNonceSize(len(n.Value)) != nil:
		return fmt.Errorf("nonce is %d bytes: want %d..%d: %w", len(n.Value), limits.MinNonceSize, limits.MaxNonceSize, ErrInvalid)
	case n.NodeID == "" || len(n.NodeID) > MaxNameLen || !textOK(n.NodeID):
		return fmt.Errorf("nonce needs a node id (UTF-8, at most %d bytes): %w", MaxNameLen, ErrInvalid)
	case n.Expires.IsZero():
		return fmt.Errorf("nonce needs an expiry: %w", ErrInvalid)
	}
	n.Expires = NormTime(n.Expires)
	return nil
}

// CheckNonce classifies a consumption attempt, in this order: unknown
// (absent or another node's), used, expired.
func CheckNonce(absent, sameNode, used, expired bool) error {
	switch {
	case absent || !sameNode:
		return ErrNonceUnknown
	case used:
		return ErrNonceUsed
	case expired:
		return ErrNonceExpired
	}
	return nil
}

// CheckRelease classifies a release attempt of attestation id, in this
// order: not granted (ErrReleaseDenied), used (ErrReleaseUsed), expired
// (ErrReleaseExpired); nil when it may be released.
func CheckRelease(id string, granted, used, expired bool) error {
	switch {
	case !granted:
		return fmt.Errorf("attestation %s: %w", id, ErrReleaseDenied)
	case used:
		return fmt.Errorf("attestation %s: %w", id, ErrReleaseUsed)
	case expired:
		return fmt.Errorf("attestation %s: %w", id, ErrReleaseExpired)
	}
	return nil
}

// Releasable reports whether a's release window is open at now, with the
// errors ConsumeRelease gives: ErrReleaseDenied (deny verdict or no window),
// ErrReleaseUsed, ErrReleaseExpired (now at or after the window's end). It
// consumes nothing: a caller checks it before the work a release needs (the
// vault), then ConsumeRelease decides, atomically.
func Releasable(a Attestation, now time.Time) error {
	return CheckRelease(a.ID, a.Allow && !a.ReleaseExpires.IsZero(), !a.ReleasedAt.IsZero(), Nanos(now) >= Nanos(a.ReleaseExpires))
}

// releaseDetails is the audit detail of a KindRelease record: the names
// released, never a value.
type releaseDetails struct {
	Attestation string   `json:"attestation"`
	Sandbox     string   `json:"sandbox"`
	Secrets     []string `json:"secrets"`
}

// ReleaseEntry returns the KindRelease audit entry of releasing a (as
// stored) at now.
func ReleaseEntry(a *Attestation, now time.Time) (AuditEntry, error) {
	if now.IsZero() {
		return AuditEntry{}, fmt.Errorf("release of attestation %s needs a time: %w", a.ID, ErrInvalid)
	}
	raw, err := json.Marshal(releaseDetails{Attestation: a.ID, Sandbox: a.SandboxID, Secrets: a.Secrets})
	if err != nil {
		return AuditEntry{}, err
	}
	e := AuditEntry{Time: now, Kind: KindRelease, NodeID: a.NodeID, Subject: a.ID, Details: raw}
	if err := ValidateAuditEntry(&e, nil); err != nil {
		return AuditEntry{}, fmt.Errorf("release of attestation %s: %w", a.ID, err)
	}
	return e, nil
}

// verdictDetails is the audit detail of a KindVerdict record.
type verdictDetails struct {
	Policy         string   `json:"policy"`
	Allow          bool     `json:"allow"`
	Reasons        []string `json:"reasons,omitempty"`
	SandboxID      string   `json:"sandbox_id,omitempty"`
	Secrets        []string `json:"secrets,omitempty"`
	ReleaseExpires string   `json:"release_expires,omitempty"`
}

// PrepareAttestation validates and normalises a (CreatedAt already set) and
// returns its verdict audit entry.
func PrepareAttestation(a *Attestation) (AuditEntry, error) {
	switch {
	case a.ID == "" || len(a.ID) > MaxIDLen:
		return AuditEntry{}, fmt.Errorf("attestation id must be 1..%d bytes: %w", MaxIDLen, ErrInvalid)
	case !textOK(a.ID, a.NodeID, a.Policy, a.SandboxID) || !textOK(a.Reasons...) || !textOK(a.Secrets...):
		return AuditEntry{}, fmt.Errorf("attestation %q: ids, policy, reasons and secret names must be UTF-8 without NUL: %w", a.ID, ErrInvalid)
	case a.NodeID == "" || len(a.NodeID) > MaxNameLen:
		return AuditEntry{}, fmt.Errorf("attestation %s needs a node id: %w", a.ID, ErrInvalid)
	case len(a.Policy) > MaxNameLen || len(a.SandboxID) > MaxIDLen || len(a.GuestPublicKey) > MaxBlob:
		return AuditEntry{}, fmt.Errorf("attestation %s: policy, sandbox id or guest key too long: %w", a.ID, ErrInvalid)
	case len(a.Reasons) > MaxReasons || len(a.Secrets) > MaxReasons:
		return AuditEntry{}, fmt.Errorf("attestation %s: over %d reasons or secrets: %w", a.ID, MaxReasons, ErrInvalid)
	case !a.ReleasedAt.IsZero():
		return AuditEntry{}, fmt.Errorf("attestation %s: ReleasedAt is set by ConsumeRelease only: %w", a.ID, ErrInvalid)
	case !a.Allow && (!a.ReleaseExpires.IsZero() || len(a.Secrets) > 0):
		return AuditEntry{}, fmt.Errorf("attestation %s: a deny verdict cannot grant secrets or a release window: %w", a.ID, ErrInvalid)
	case !a.ReleaseExpires.IsZero() && len(a.Secrets) == 0:
		return AuditEntry{}, fmt.Errorf("attestation %s: a release window needs granted secrets: %w", a.ID, ErrInvalid)
	}
	a.CreatedAt, a.ReleaseExpires = NormTime(a.CreatedAt), NormTime(a.ReleaseExpires)
	d := verdictDetails{Policy: a.Policy, Allow: a.Allow, Reasons: a.Reasons, SandboxID: a.SandboxID, Secrets: a.Secrets}
	if !a.ReleaseExpires.IsZero() {
		d.ReleaseExpires = a.ReleaseExpires.Format("2006-01-02T15:04:05.000000Z07:00")
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return AuditEntry{}, err
	}
	e := AuditEntry{Time: a.CreatedAt, Kind: KindVerdict, NodeID: a.NodeID, Subject: a.ID, Details: raw}
	if err := ValidateAuditEntry(&e, nil); err != nil {
		return AuditEntry{}, fmt.Errorf("attestation %s: %w", a.ID, err)
	}
	return e, nil
}

// ValidateSecret checks a secret before PutSecret stores it as the version
// after prevVersion (ErrInvalid).
func ValidateSecret(s *Secret, prevVersion uint64) error {
	switch {
	case s.Name == "" || len(s.Name) > MaxNameLen || !textOK(s.Name, s.Description):
		return fmt.Errorf("secret name must be 1..%d bytes, name and description UTF-8 without NUL: %w", MaxNameLen, ErrInvalid)
	case s.Version != prevVersion+1:
		return fmt.Errorf("secret %q: version %d does not follow %d: %w", s.Name, s.Version, prevVersion, ErrInvalid)
	case len(s.Ciphertext) == 0 || len(s.Ciphertext) > MaxCiphertext:
		return fmt.Errorf("secret %q: ciphertext is %d bytes: want 1..%d: %w", s.Name, len(s.Ciphertext), MaxCiphertext, ErrInvalid)
	case s.Size < 0 || len(s.Description) > 4096:
		return fmt.Errorf("secret %q: bad size or description over 4096 bytes: %w", s.Name, ErrInvalid)
	}
	s.CreatedAt, s.UpdatedAt = NormTime(s.CreatedAt), NormTime(s.UpdatedAt)
	return nil
}
