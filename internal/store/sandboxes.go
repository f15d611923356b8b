package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
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
	Secrets   []DecisionSecret
	CreatedAt time.Time
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
	maxSandboxRecord = 8 << 20
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
	// returns it as stored. ErrNotFound if the node does not exist.
	AppendDecision(ctx context.Context, d Decision) (Decision, error)
	// ListDecisions returns up to limit (1..MaxDecisionsPage) of the
	// node's decisions with Seq > after, in order.
	ListDecisions(ctx context.Context, nodeID string, after uint64, limit int) ([]Decision, error)
}

func validateSandboxState(st *SandboxState) error {
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

func validateDecision(d *Decision) error {
	switch {
	case d.NodeID == "" || d.SandboxID == "":
		return fmt.Errorf("decision: node or sandbox id missing: %w", ErrInvalid)
	case d.Kind != DecisionRevoke && d.Kind != DecisionRotate:
		return fmt.Errorf("decision: kind %q: %w", d.Kind, ErrInvalid)
	}
	return nil
}

func checkDecisionsLimit(limit int) error {
	if limit < 1 || limit > MaxDecisionsPage {
		return fmt.Errorf("decisions: limit %d, want 1..%d: %w", limit, MaxDecisionsPage, ErrInvalid)
	}
	return nil
}

// sandboxRec and decisionRec are the stored encodings (JSON), in both
// backends.
type sandboxRec struct {
	Policy         string          `json:"policy"`
	JudgedBy       string          `json:"judged_by,omitempty"`
	Verdict        SandboxVerdict  `json:"verdict"`
	Reasons        []string        `json:"reasons,omitempty"`
	VerdictAt      int64           `json:"verdict_at"`
	Interval       int64           `json:"interval"`
	GuestPublicKey []byte          `json:"guest_public_key,omitempty"`
	EventDigest    []byte          `json:"event_digest,omitempty"`
	Reset          uint32          `json:"reset"`
	Restart        uint32          `json:"restart"`
	Evidence       []byte          `json:"evidence,omitempty"`
	Secrets        []SandboxSecret `json:"secrets,omitempty"`
	OnRevoke       string          `json:"on_revoke,omitempty"`
	Created        int64           `json:"created"`
}

func encodeSandbox(st *SandboxState) ([]byte, error) {
	b, err := json.Marshal(sandboxRec{Policy: st.Policy, JudgedBy: st.JudgedBy, Verdict: st.Verdict, Reasons: st.Reasons,
		VerdictAt: nanos(st.VerdictAt), Interval: int64(st.Interval), GuestPublicKey: st.GuestPublicKey, EventDigest: st.EventDigest,
		Reset: st.ResetCount, Restart: st.RestartCount, Evidence: st.Evidence, Secrets: st.Secrets, OnRevoke: st.OnRevoke, Created: nanos(st.CreatedAt)})
	if err == nil && len(b) > maxSandboxRecord {
		err = fmt.Errorf("sandbox state: %d bytes encoded, the limit is %d: %w", len(b), maxSandboxRecord, ErrInvalid)
	}
	return b, err
}

func decodeSandbox(node, id string, b []byte) (SandboxState, error) {
	var r sandboxRec
	if err := json.Unmarshal(b, &r); err != nil {
		return SandboxState{}, fmt.Errorf("store: corrupt sandbox state %s/%s: %w", node, id, err)
	}
	return SandboxState{NodeID: node, SandboxID: id, Policy: r.Policy, JudgedBy: r.JudgedBy, Verdict: r.Verdict, Reasons: r.Reasons,
		VerdictAt: fromNanos(r.VerdictAt), Interval: time.Duration(r.Interval), GuestPublicKey: r.GuestPublicKey, EventDigest: r.EventDigest,
		ResetCount: r.Reset, RestartCount: r.Restart, Evidence: r.Evidence, Secrets: r.Secrets, OnRevoke: r.OnRevoke, CreatedAt: fromNanos(r.Created)}, nil
}

type decisionRec struct {
	Sandbox string           `json:"sandbox"`
	Kind    DecisionKind     `json:"kind"`
	Action  string           `json:"action,omitempty"`
	Reasons []string         `json:"reasons,omitempty"`
	Secrets []DecisionSecret `json:"secrets,omitempty"`
	Created int64            `json:"created"`
}

func encodeDecision(d *Decision) ([]byte, error) {
	return json.Marshal(decisionRec{Sandbox: d.SandboxID, Kind: d.Kind, Action: d.Action, Reasons: d.Reasons, Secrets: d.Secrets, Created: nanos(d.CreatedAt)})
}

func decodeDecision(node string, seq uint64, b []byte) (Decision, error) {
	var r decisionRec
	if err := json.Unmarshal(b, &r); err != nil {
		return Decision{}, fmt.Errorf("store: corrupt decision %s/%d: %w", node, seq, err)
	}
	return Decision{NodeID: node, Seq: seq, SandboxID: r.Sandbox, Kind: r.Kind, Action: r.Action, Reasons: r.Reasons,
		Secrets: r.Secrets, CreatedAt: fromNanos(r.Created)}, nil
}

// ---- embedded ----

var (
	// bktSandboxes holds a sub-bucket per node: sandbox id → sandboxRec.
	bktSandboxes = []byte("sandboxes")
	// bktDecisions holds a sub-bucket per node: seq (8 bytes, big-endian)
	// → decisionRec.
	bktDecisions = []byte("decisions")
)

func (s *embedded) PutSandbox(ctx context.Context, st SandboxState) error {
	if err := validateSandboxState(&st); err != nil {
		return err
	}
	if st.CreatedAt.IsZero() {
		st.CreatedAt = s.now()
	}
	b, err := encodeSandbox(&st)
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *txn) error {
		if tx.Bucket(bktNodes).Get([]byte(st.NodeID)) == nil {
			return logical(fmt.Errorf("node %s: %w", st.NodeID, ErrNotFound))
		}
		nb, err := tx.Bucket(bktSandboxes).CreateBucketIfNotExists([]byte(st.NodeID))
		if err != nil {
			return err
		}
		return nb.Put([]byte(st.SandboxID), b)
	})
}

func (s *embedded) GetSandbox(ctx context.Context, nodeID, sandboxID string) (SandboxState, error) {
	var out SandboxState
	err := s.view(func(tx *bolt.Tx) error {
		var v []byte
		if nb := tx.Bucket(bktSandboxes).Bucket([]byte(nodeID)); nb != nil {
			v = nb.Get([]byte(sandboxID))
		}
		if v == nil {
			return fmt.Errorf("sandbox %s of node %s: %w", sandboxID, nodeID, ErrNotFound)
		}
		var err error
		out, err = decodeSandbox(nodeID, sandboxID, v)
		return err
	})
	return out, err
}

func (s *embedded) ListSandboxStates(ctx context.Context, nodeID string) ([]SandboxState, error) {
	var out []SandboxState
	err := s.view(func(tx *bolt.Tx) error {
		root := tx.Bucket(bktSandboxes)
		each := func(node []byte, nb *bolt.Bucket) error {
			return nb.ForEach(func(k, v []byte) error {
				st, err := decodeSandbox(string(node), string(k), v)
				if err == nil {
					out = append(out, st)
				}
				return err
			})
		}
		if nodeID != "" {
			if nb := root.Bucket([]byte(nodeID)); nb != nil {
				return each([]byte(nodeID), nb)
			}
			return nil
		}
		return root.ForEachBucket(func(k []byte) error { return each(k, root.Bucket(k)) })
	})
	return out, err
}

func (s *embedded) DeleteSandbox(ctx context.Context, nodeID, sandboxID string) error {
	return s.write(ctx, func(tx *txn) error {
		nb := tx.Bucket(bktSandboxes).Bucket([]byte(nodeID))
		if nb == nil || nb.Get([]byte(sandboxID)) == nil {
			return logical(fmt.Errorf("sandbox %s of node %s: %w", sandboxID, nodeID, ErrNotFound))
		}
		return nb.Delete([]byte(sandboxID))
	})
}

func (s *embedded) AppendDecision(ctx context.Context, d Decision) (Decision, error) {
	if err := validateDecision(&d); err != nil {
		return Decision{}, err
	}
	if d.CreatedAt.IsZero() {
		d.CreatedAt = s.now()
	}
	d.CreatedAt = normTime(d.CreatedAt)
	b, err := encodeDecision(&d)
	if err != nil {
		return Decision{}, err
	}
	err = s.write(ctx, func(tx *txn) error {
		if tx.Bucket(bktNodes).Get([]byte(d.NodeID)) == nil {
			return logical(fmt.Errorf("node %s: %w", d.NodeID, ErrNotFound))
		}
		nb, err := tx.Bucket(bktDecisions).CreateBucketIfNotExists([]byte(d.NodeID))
		if err != nil {
			return err
		}
		seq := uint64(1)
		if k, _ := nb.Cursor().Last(); len(k) == 8 {
			seq = binary.BigEndian.Uint64(k) + 1
		}
		d.Seq = seq
		return nb.Put(binary.BigEndian.AppendUint64(nil, seq), b)
	})
	if err != nil {
		return Decision{}, err
	}
	return d, nil
}

func (s *embedded) ListDecisions(ctx context.Context, nodeID string, after uint64, limit int) ([]Decision, error) {
	if err := checkDecisionsLimit(limit); err != nil {
		return nil, err
	}
	var out []Decision
	err := s.view(func(tx *bolt.Tx) error {
		nb := tx.Bucket(bktDecisions).Bucket([]byte(nodeID))
		if nb == nil {
			return nil
		}
		c := nb.Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, after+1)); k != nil && len(out) < limit; k, v = c.Next() {
			if len(k) != 8 {
				continue
			}
			d, err := decodeDecision(nodeID, binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// deleteSandboxes removes node id's kept sandboxes and decisions in tx.
func deleteSandboxes(tx *txn, id string) error {
	for _, b := range [][]byte{bktSandboxes, bktDecisions} {
		if tx.Bucket(b).Bucket([]byte(id)) != nil {
			if err := tx.Bucket(b).DeleteBucket([]byte(id)); err != nil {
				return err
			}
		}
	}
	return nil
}

// ---- PostgreSQL ----

func (s *pgStore) PutSandbox(ctx context.Context, st SandboxState) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := validateSandboxState(&st); err != nil {
		return err
	}
	if st.CreatedAt.IsZero() {
		st.CreatedAt = s.now()
	}
	b, err := encodeSandbox(&st)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM nodes WHERE id = $1 FOR KEY SHARE`, st.NodeID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("node %s: %w", st.NodeID, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("store: reading node %s: %w", st.NodeID, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO sandbox_states (node, sandbox_id, data) VALUES ($1, $2, $3)
			ON CONFLICT (node, sandbox_id) DO UPDATE SET data = EXCLUDED.data`, st.NodeID, st.SandboxID, b); err != nil {
			return fmt.Errorf("store: writing sandbox %s: %w", st.SandboxID, err)
		}
		return nil
	})
}

func (s *pgStore) GetSandbox(ctx context.Context, nodeID, sandboxID string) (SandboxState, error) {
	if err := s.check(); err != nil {
		return SandboxState{}, err
	}
	var b []byte
	err := s.pool.QueryRow(ctx, `SELECT data FROM sandbox_states WHERE node = $1 AND sandbox_id = $2`, nodeID, sandboxID).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return SandboxState{}, fmt.Errorf("sandbox %s of node %s: %w", sandboxID, nodeID, ErrNotFound)
	}
	if err != nil {
		return SandboxState{}, fmt.Errorf("store: reading sandbox %s: %w", sandboxID, err)
	}
	return decodeSandbox(nodeID, sandboxID, b)
}

func (s *pgStore) ListSandboxStates(ctx context.Context, nodeID string) ([]SandboxState, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT node, sandbox_id, data FROM sandbox_states WHERE $1 = '' OR node = $1 ORDER BY node, sandbox_id`, nodeID)
	if err != nil {
		return nil, fmt.Errorf("store: listing sandboxes: %w", err)
	}
	defer rows.Close()
	var out []SandboxState
	for rows.Next() {
		var node, id string
		var b []byte
		if err := rows.Scan(&node, &id, &b); err != nil {
			return nil, fmt.Errorf("store: listing sandboxes: %w", err)
		}
		st, err := decodeSandbox(node, id, b)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

func (s *pgStore) DeleteSandbox(ctx context.Context, nodeID, sandboxID string) error {
	if err := s.check(); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM sandbox_states WHERE node = $1 AND sandbox_id = $2`, nodeID, sandboxID)
	if err != nil {
		return fmt.Errorf("store: deleting sandbox %s: %w", sandboxID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("sandbox %s of node %s: %w", sandboxID, nodeID, ErrNotFound)
	}
	return nil
}

func (s *pgStore) AppendDecision(ctx context.Context, d Decision) (Decision, error) {
	if err := s.check(); err != nil {
		return Decision{}, err
	}
	if err := validateDecision(&d); err != nil {
		return Decision{}, err
	}
	if d.CreatedAt.IsZero() {
		d.CreatedAt = s.now()
	}
	d.CreatedAt = normTime(d.CreatedAt)
	b, err := encodeDecision(&d)
	if err != nil {
		return Decision{}, err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The node's row lock orders its decisions (between replicas too).
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM nodes WHERE id = $1 FOR UPDATE`, d.NodeID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("node %s: %w", d.NodeID, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("store: reading node %s: %w", d.NodeID, err)
		}
		var seq int64
		if err := tx.QueryRow(ctx, `INSERT INTO decisions (node, seq, data)
			SELECT $1, COALESCE(MAX(seq), 0) + 1, $2 FROM decisions WHERE node = $1 RETURNING seq`, d.NodeID, b).Scan(&seq); err != nil {
			return fmt.Errorf("store: appending a decision for node %s: %w", d.NodeID, err)
		}
		d.Seq = uint64(seq)
		return nil
	})
	if err != nil {
		return Decision{}, err
	}
	return d, nil
}

func (s *pgStore) ListDecisions(ctx context.Context, nodeID string, after uint64, limit int) ([]Decision, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if err := checkDecisionsLimit(limit); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT seq, data FROM decisions WHERE node = $1 AND seq > $2 ORDER BY seq LIMIT $3`, nodeID, pgInt64(after), limit)
	if err != nil {
		return nil, fmt.Errorf("store: listing decisions: %w", err)
	}
	defer rows.Close()
	var out []Decision
	for rows.Next() {
		var seq int64
		var b []byte
		if err := rows.Scan(&seq, &b); err != nil {
			return nil, fmt.Errorf("store: listing decisions: %w", err)
		}
		d, err := decodeDecision(nodeID, uint64(seq), b)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
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
