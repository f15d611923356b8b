package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// SandboxVerdict is a kept sandbox's latest verdict.
type SandboxVerdict string

// The verdicts of a kept sandbox. Stale is not stored: it is an allow
// older than twice the sandbox's interval (SandboxState.Effective).
// Ended: the sandbox's END record is in its node's verified launch log
// (docs/eventlog.md "END records"); it is never judged again.
const (
	SandboxAllow   SandboxVerdict = "allow"
	SandboxDeny    SandboxVerdict = "deny"
	SandboxRevoked SandboxVerdict = "revoked"
	SandboxStale   SandboxVerdict = "stale"
	SandboxEnded   SandboxVerdict = "ended"
)

// SandboxState is what attestd keeps of a sandbox that a host service runs
// and re-attests (docs/attestd.md "Continuous attestation"): its latest
// verdict and when it was made, and the evidence of its launch, so that a
// policy change is judged again without the host.
type SandboxState struct {
	NodeID    string
	SandboxID string
	// Policy is the policy the launch event names; JudgedBy the name and
	// version that judged last.
	Policy   string
	JudgedBy string
	Verdict  SandboxVerdict // allow, deny, revoked or ended
	Reasons  []string
	// VerdictAt is when the latest verdict was made; Interval how often
	// the host re-attests.
	VerdictAt time.Time
	Interval  time.Duration
	// GuestPublicKey is the launch event's: rotated secrets are wrapped to it.
	GuestPublicKey []byte
	// EventDigest is the SHA-256 digest of the sandbox's launch record,
	// which a re-attestation finds again in the node's verified log, in the
	// TPM boot cycle ResetCount/RestartCount.
	EventDigest  []byte
	ResetCount   uint32
	RestartCount uint32
	// Evidence is attestd's encoding of what policy judged at launch
	// (opaque to the store).
	Evidence []byte
	// Secrets are the secrets released to the sandbox, with the version
	// each has in the guest.
	Secrets   []SandboxSecret
	OnRevoke  string
	CreatedAt time.Time
}

// SandboxSecret is a secret a sandbox holds, and its version.
type SandboxSecret struct {
	Name    string `json:"name"`
	Version uint64 `json:"version"`
}

// Effective is the verdict to report at now: an allow with no fresh
// verdict within twice the interval is SandboxStale, never an allow.
func (st *SandboxState) Effective(now time.Time) SandboxVerdict {
	if st.Verdict == SandboxAllow && (st.Interval <= 0 || now.Sub(st.VerdictAt) > 2*st.Interval) {
		return SandboxStale
	}
	return st.Verdict
}

// DecisionKind is what a decision tells a host.
type DecisionKind string

// Decision kinds.
const (
	DecisionRevoke DecisionKind = "revoke"
	DecisionRotate DecisionKind = "rotate"
)

// Decision is one decision about a sandbox of a node, which the node's
// host service applies (the Attestation.WatchNode stream). Seq numbers a
// node's decisions from 1.
type Decision struct {
	NodeID    string
	Seq       uint64
	SandboxID string
	Kind      DecisionKind
	Action    string // revoke: the policy's on_revoke
	Reasons   []string
	// Secrets: for a rotation the new versions, wrapped to the guest key;
	// for a revocation the names to remove (none: all).
	Secrets []DecisionSecret
	// Key, when set, makes the decision unique: a node holds at most one
	// decision with a given key, so a decision that several paths (or
	// replicas) reach at once is stored, and sent, once. attestd keys a
	// revocation by the sandbox's launch event (RevokeKey).
	Key       string
	CreatedAt time.Time
}

// RevokeKey is the Decision.Key of the revocation of a kept sandbox's
// launch (its id and launch record digest), of the secrets named — none:
// the whole sandbox. A launch is revoked once, whichever change decided it.
func RevokeKey(sandboxID string, eventDigest []byte, secrets ...string) string {
	k := fmt.Sprintf("revoke %s %x", sandboxID, eventDigest)
	if len(secrets) > 0 {
		s := slices.Sorted(slices.Values(secrets))
		k += " secrets " + strings.Join(s, ",")
	}
	return k
}

// DecisionSecret is a secret a decision names.
type DecisionSecret struct {
	Name    string `json:"name"`
	Version uint64 `json:"version,omitempty"`
	Wrapped []byte `json:"wrapped,omitempty"`
}

// Limits of the continuous-attestation records.
const (
	// MaxDecisionsPage bounds ListDecisions' limit.
	MaxDecisionsPage = 1000
	MaxSandboxRecord = 8 << 20
	// MaxDecisionKey bounds Decision.Key.
	MaxDecisionKey = 1024
)

// Sandboxes stores the kept sandboxes and the decisions about them.
type Sandboxes interface {
	// PutSandbox writes st (a new sandbox, or the whole state of one
	// kept). ErrNotFound if the node does not exist; ErrInvalid for
	// missing fields.
	PutSandbox(ctx context.Context, st SandboxState) error
	// GetSandbox returns one kept sandbox, or ErrNotFound.
	GetSandbox(ctx context.Context, nodeID, sandboxID string) (SandboxState, error)
	// ListSandboxStates returns the kept sandboxes of nodeID ("": of every
	// node), ordered by node and sandbox id.
	ListSandboxStates(ctx context.Context, nodeID string) ([]SandboxState, error)
	// DeleteSandbox forgets a kept sandbox; ErrNotFound if absent.
	DeleteSandbox(ctx context.Context, nodeID, sandboxID string) error
	// AppendDecision stores d with the node's next sequence number and
	// returns it as stored. ErrNotFound if the node does not exist. When
	// d.Key is set and the node holds a decision with that key already, it
	// stores nothing and returns that decision, with ErrConflict (atomic:
	// of concurrent appends with one key, exactly one is stored).
	AppendDecision(ctx context.Context, d Decision) (Decision, error)
	// ListDecisions returns up to limit (1..MaxDecisionsPage) of the
	// node's decisions with Seq > after, in order.
	ListDecisions(ctx context.Context, nodeID string, after uint64, limit int) ([]Decision, error)
}

// ValidateSandboxState checks a sandbox state before PutSandbox stores it
// (ErrInvalid).
func ValidateSandboxState(st *SandboxState) error {
	switch {
	case st.NodeID == "" || st.SandboxID == "" || len(st.SandboxID) > MaxPrefixSandboxID:
		return fmt.Errorf("sandbox state: node or sandbox id missing or too long: %w", ErrInvalid)
	case st.Verdict != SandboxAllow && st.Verdict != SandboxDeny && st.Verdict != SandboxRevoked && st.Verdict != SandboxEnded:
		return fmt.Errorf("sandbox state: verdict %q: %w", st.Verdict, ErrInvalid)
	case st.VerdictAt.IsZero():
		return fmt.Errorf("sandbox state: verdict time missing: %w", ErrInvalid)
	}
	return nil
}

// ValidateDecision checks a decision before AppendDecision stores it
// (ErrInvalid).
func ValidateDecision(d *Decision) error {
	switch {
	case d.NodeID == "" || d.SandboxID == "":
		return fmt.Errorf("decision: node or sandbox id missing: %w", ErrInvalid)
	case d.Kind != DecisionRevoke && d.Kind != DecisionRotate:
		return fmt.Errorf("decision: kind %q: %w", d.Kind, ErrInvalid)
	case len(d.Key) > MaxDecisionKey:
		return fmt.Errorf("decision: key of %d bytes, over %d: %w", len(d.Key), MaxDecisionKey, ErrInvalid)
	}
	return nil
}

// CheckDecisionsLimit checks ListDecisions' limit: 1..MaxDecisionsPage.
func CheckDecisionsLimit(limit int) error {
	if limit < 1 || limit > MaxDecisionsPage {
		return fmt.Errorf("decisions: limit %d, want 1..%d: %w", limit, MaxDecisionsPage, ErrInvalid)
	}
	return nil
}

// ---- classified ----

func (f faultStore) PutSandbox(ctx context.Context, st SandboxState) error {
	return Unavailable(f.s.PutSandbox(ctx, st))
}

func (f faultStore) GetSandbox(ctx context.Context, nodeID, sandboxID string) (SandboxState, error) {
	v, err := f.s.GetSandbox(ctx, nodeID, sandboxID)
	return v, Unavailable(err)
}

func (f faultStore) ListSandboxStates(ctx context.Context, nodeID string) ([]SandboxState, error) {
	v, err := f.s.ListSandboxStates(ctx, nodeID)
	return v, Unavailable(err)
}

func (f faultStore) DeleteSandbox(ctx context.Context, nodeID, sandboxID string) error {
	return Unavailable(f.s.DeleteSandbox(ctx, nodeID, sandboxID))
}

func (f faultStore) AppendDecision(ctx context.Context, d Decision) (Decision, error) {
	v, err := f.s.AppendDecision(ctx, d)
	return v, Unavailable(err)
}

func (f faultStore) ListDecisions(ctx context.Context, nodeID string, after uint64, limit int) ([]Decision, error) {
	v, err := f.s.ListDecisions(ctx, nodeID, after, limit)
	return v, Unavailable(err)
}
