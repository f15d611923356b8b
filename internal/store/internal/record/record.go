// Package record holds the stored forms of the store's values that both
// backends share: the embedded store's JSON records and the rows the
// PostgreSQL store scans, with times as Unix nanoseconds (store.Nanos).
package record

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
)

// Node is a node as the stores keep it. The embedded store keeps the last
// verdict (LV*) apart, in its bucket of last verdicts; the PostgreSQL store
// keeps it in the node's row.
type Node struct {
	ID        string          `json:"id"`
	EKPublic  []byte          `json:"ek_public"`
	EKCert    []byte          `json:"ek_cert,omitempty"`
	AKPublic  []byte          `json:"ak_public"`
	AKName    []byte          `json:"ak_name"`
	State     store.NodeState `json:"state"`
	ChHash    []byte          `json:"challenge_hash,omitempty"`
	ChExpires int64           `json:"challenge_expires,omitempty"`
	LVID      string          `json:"-"`
	LVPolicy  string          `json:"-"`
	LVAllow   bool            `json:"-"`
	LVTime    int64           `json:"-"`
	LVUpdated int64           `json:"-"` // when the last verdict was recorded
	Created   int64           `json:"created"`
	Updated   int64           `json:"updated"`
}

// Last is a node's last verdict as the embedded store keeps it, apart
// from the node's record.
type Last struct {
	ID      string `json:"id"`
	Policy  string `json:"policy,omitempty"`
	Allow   bool   `json:"allow,omitempty"`
	Time    int64  `json:"time"`
	Updated int64  `json:"updated"` // when it was recorded: the node's UpdatedAt
}

// Last is r's last verdict (the zero Last if it has none).
func (r *Node) Last() Last {
	if r.LVID == "" {
		return Last{}
	}
	return Last{ID: r.LVID, Policy: r.LVPolicy, Allow: r.LVAllow, Time: r.LVTime, Updated: r.LVUpdated}
}

// SetLast sets r's last verdict to lv.
func (r *Node) SetLast(lv Last) {
	r.LVID, r.LVPolicy, r.LVAllow, r.LVTime, r.LVUpdated = lv.ID, lv.Policy, lv.Allow, lv.Time, lv.Updated
}

// FromNode is n as stored.
func FromNode(n *store.Node) Node {
	r := Node{ID: n.ID, EKPublic: n.EKPublic, EKCert: n.EKCert, AKPublic: n.AKPublic, AKName: n.AKName, State: n.State, Created: store.Nanos(n.CreatedAt), Updated: store.Nanos(n.UpdatedAt)}
	if n.Challenge != nil {
		r.ChHash, r.ChExpires = n.Challenge.SecretHash, store.Nanos(n.Challenge.Expires)
	}
	if v := n.LastVerdict; v != nil {
		r.LVID, r.LVPolicy, r.LVAllow, r.LVTime = v.AttestationID, v.Policy, v.Allow, store.Nanos(v.Time)
	}
	return r
}

// Node is the node r stores.
func (r *Node) Node() store.Node {
	n := store.Node{ID: r.ID, EKPublic: r.EKPublic, EKCert: r.EKCert, AKPublic: r.AKPublic, AKName: r.AKName, State: r.State, CreatedAt: store.FromNanos(r.Created), UpdatedAt: store.FromNanos(max(r.Updated, r.LVUpdated))}
	if r.ChHash != nil {
		n.Challenge = &store.Challenge{SecretHash: r.ChHash, Expires: store.FromNanos(r.ChExpires)}
	}
	if r.LVID != "" {
		n.LastVerdict = &store.LastVerdict{AttestationID: r.LVID, Policy: r.LVPolicy, Allow: r.LVAllow, Time: store.FromNanos(r.LVTime)}
	}
	return n
}

// Attestation is an attestation as stored.
type Attestation struct {
	ID       string   `json:"id"`
	Node     string   `json:"node"`
	Policy   string   `json:"policy"`
	Allow    bool     `json:"allow"`
	Reasons  []string `json:"reasons,omitempty"`
	Sandbox  string   `json:"sandbox_id,omitempty"`
	GuestPub []byte   `json:"guest_public_key,omitempty"`
	Secrets  []string `json:"secrets,omitempty"`
	Created  int64    `json:"created"`
	RelExp   int64    `json:"release_expires,omitempty"`
	Released int64    `json:"released,omitempty"`
}

// FromAttestation is a as stored.
func FromAttestation(a *store.Attestation) Attestation {
	return Attestation{ID: a.ID, Node: a.NodeID, Policy: a.Policy, Allow: a.Allow, Reasons: a.Reasons, Sandbox: a.SandboxID, GuestPub: a.GuestPublicKey, Secrets: a.Secrets, Created: store.Nanos(a.CreatedAt), RelExp: store.Nanos(a.ReleaseExpires), Released: store.Nanos(a.ReleasedAt)}
}

// Attestation is the attestation r stores.
func (r *Attestation) Attestation() store.Attestation {
	return store.Attestation{ID: r.ID, NodeID: r.Node, Policy: r.Policy, Allow: r.Allow, Reasons: r.Reasons, SandboxID: r.Sandbox, GuestPublicKey: r.GuestPub, Secrets: r.Secrets, CreatedAt: store.FromNanos(r.Created), ReleaseExpires: store.FromNanos(r.RelExp), ReleasedAt: store.FromNanos(r.Released)}
}

// Secret is a vault secret's ciphertext and metadata as stored.
type Secret struct {
	Name    string `json:"name"`
	Version uint64 `json:"version"`
	Size    int    `json:"size"`
	Desc    string `json:"description,omitempty"`
	Created int64  `json:"created"`
	Updated int64  `json:"updated"`
	CT      []byte `json:"ciphertext"`
}

// Meta is the metadata of the secret r stores.
func (r *Secret) Meta() store.SecretMeta {
	return store.SecretMeta{Name: r.Name, Version: r.Version, Size: r.Size, Description: r.Desc, CreatedAt: store.FromNanos(r.Created), UpdatedAt: store.FromNanos(r.Updated)}
}

// Audit is an audit record as stored. Details are kept as base64 bytes,
// never re-encoded, so the hash covers exactly what was written.
type Audit struct {
	Seq     uint64 `json:"seq"`
	Time    int64  `json:"time"`
	Kind    string `json:"kind"`
	Node    string `json:"node,omitempty"`
	Subject string `json:"subject,omitempty"`
	Details []byte `json:"details"`
	Prev    []byte `json:"prev"`
	Hash    []byte `json:"hash"`
}

// Record is the audit record r stores.
func (r *Audit) Record() store.AuditRecord {
	return store.AuditRecord{Seq: r.Seq, Time: store.FromNanos(r.Time), Kind: store.AuditKind(r.Kind), NodeID: r.Node, Subject: r.Subject, Details: json.RawMessage(r.Details), Prev: r.Prev, Hash: r.Hash}
}

// Join is a replica join request as stored.
type Join struct {
	ID         string `json:"id"`
	Node       string `json:"node"`
	PublicKey  []byte `json:"public_key"`
	State      string `json:"state"`
	Wrapped    []byte `json:"wrapped,omitempty"`
	ApprovedBy string `json:"approved_by,omitempty"`
	Created    int64  `json:"created"`
	Updated    int64  `json:"updated"`
}

// Join is the join request r stores.
func (r *Join) Join() store.Join {
	return store.Join{ID: r.ID, Node: r.Node, PublicKey: r.PublicKey, State: store.JoinState(r.State), Wrapped: r.Wrapped,
		ApprovedBy: r.ApprovedBy, CreatedAt: store.FromNanos(r.Created), UpdatedAt: store.FromNanos(r.Updated)}
}

// Clone copies r deeply enough that changing the copy (fields or bytes)
// never changes r. Every read of a node clones it, so the byte fields share
// one new allocation (each capped: appending to one cannot reach the next).
func (r *Node) Clone() *Node {
	c := *r
	fields := []*[]byte{&c.EKPublic, &c.EKCert, &c.AKPublic, &c.AKName, &c.ChHash}
	n := 0
	for _, f := range fields {
		n += len(*f)
	}
	buf := make([]byte, 0, n)
	for _, f := range fields {
		if *f != nil { // nil stays nil, empty stays empty, as bytes.Clone does
			start := len(buf)
			buf = append(buf, *f...)
			*f = buf[start:len(buf):len(buf)]
		}
	}
	return &c
}

// Normalize makes r what decoding its JSON gives back (an empty optional
// field is omitted, so it decodes as nil), so that a cached record equals
// a decoded one.
func (r *Node) Normalize() {
	for _, p := range []*[]byte{&r.EKCert, &r.ChHash} {
		if len(*p) == 0 {
			*p = nil
		}
	}
}

// sandboxRec and decisionRec are the stored encodings (JSON), in both
// backends.
type sandboxRec struct {
	Policy         string                `json:"policy"`
	JudgedBy       string                `json:"judged_by,omitempty"`
	Verdict        store.SandboxVerdict  `json:"verdict"`
	Reasons        []string              `json:"reasons,omitempty"`
	VerdictAt      int64                 `json:"verdict_at"`
	Interval       int64                 `json:"interval"`
	GuestPublicKey []byte                `json:"guest_public_key,omitempty"`
	EventDigest    []byte                `json:"event_digest,omitempty"`
	Reset          uint32                `json:"reset"`
	Restart        uint32                `json:"restart"`
	Evidence       []byte                `json:"evidence,omitempty"`
	Secrets        []store.SandboxSecret `json:"secrets,omitempty"`
	OnRevoke       string                `json:"on_revoke,omitempty"`
	Created        int64                 `json:"created"`
}

// EncodeSandbox is st as stored; more than store.MaxSandboxRecord bytes
// is ErrInvalid.
func EncodeSandbox(st *store.SandboxState) ([]byte, error) {
	b, err := json.Marshal(sandboxRec{Policy: st.Policy, JudgedBy: st.JudgedBy, Verdict: st.Verdict, Reasons: st.Reasons,
		VerdictAt: store.Nanos(st.VerdictAt), Interval: int64(st.Interval), GuestPublicKey: st.GuestPublicKey, EventDigest: st.EventDigest,
		Reset: st.ResetCount, Restart: st.RestartCount, Evidence: st.Evidence, Secrets: st.Secrets, OnRevoke: st.OnRevoke, Created: store.Nanos(st.CreatedAt)})
	if err == nil && len(b) > store.MaxSandboxRecord {
		err = fmt.Errorf("sandbox state: %d bytes encoded, the limit is %d: %w", len(b), store.MaxSandboxRecord, store.ErrInvalid)
	}
	return b, err
}

// DecodeSandbox is the state of sandbox id of node that b stores.
func DecodeSandbox(node, id string, b []byte) (store.SandboxState, error) {
	var r sandboxRec
	if err := json.Unmarshal(b, &r); err != nil {
		return store.SandboxState{}, fmt.Errorf("store: corrupt sandbox state %s/%s: %w", node, id, err)
	}
	return store.SandboxState{NodeID: node, SandboxID: id, Policy: r.Policy, JudgedBy: r.JudgedBy, Verdict: r.Verdict, Reasons: r.Reasons,
		VerdictAt: store.FromNanos(r.VerdictAt), Interval: time.Duration(r.Interval), GuestPublicKey: r.GuestPublicKey, EventDigest: r.EventDigest,
		ResetCount: r.Reset, RestartCount: r.Restart, Evidence: r.Evidence, Secrets: r.Secrets, OnRevoke: r.OnRevoke, CreatedAt: store.FromNanos(r.Created)}, nil
}

type decisionRec struct {
	Sandbox string                 `json:"sandbox"`
	Kind    store.DecisionKind     `json:"kind"`
	Action  string                 `json:"action,omitempty"`
	Reasons []string               `json:"reasons,omitempty"`
	Secrets []store.DecisionSecret `json:"secrets,omitempty"`
	Key     string                 `json:"key,omitempty"`
	Created int64                  `json:"created"`
}

// EncodeDecision is d as stored.
func EncodeDecision(d *store.Decision) ([]byte, error) {
	return json.Marshal(decisionRec{Sandbox: d.SandboxID, Kind: d.Kind, Action: d.Action, Reasons: d.Reasons, Secrets: d.Secrets, Key: d.Key, Created: store.Nanos(d.CreatedAt)})
}

// DecodeDecision is decision seq of node that b stores.
func DecodeDecision(node string, seq uint64, b []byte) (store.Decision, error) {
	var r decisionRec
	if err := json.Unmarshal(b, &r); err != nil {
		return store.Decision{}, fmt.Errorf("store: corrupt decision %s/%d: %w", node, seq, err)
	}
	return store.Decision{NodeID: node, Seq: seq, SandboxID: r.Sandbox, Kind: r.Kind, Action: r.Action, Reasons: r.Reasons,
		Secrets: r.Secrets, Key: r.Key, CreatedAt: store.FromNanos(r.Created)}, nil
}
