package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bulwark-project/bulwark/tpm/limits"
	bolt "go.etcd.io/bbolt"
)

// EmbeddedFile is the database file of the embedded store in its directory.
const EmbeddedFile = "attestd.db"

// maxGroup bounds how many writes share one commit.
const maxGroup = 512

// commitSpacing is the least time between the starts of two commits while
// writes keep arriving. An idle store commits a write at once; under load
// the committer waits out the rest of the spacing so that one commit (two
// fdatasyncs) serves every write that arrived meanwhile, instead of a
// commit per write or two. It bounds the latency it adds to this. Much of
// a commit's CPU (the fdatasyncs, the meta and branch pages, waking the
// committer) does not depend on how many writes it holds: at 2,000
// attestations/s, 2 ms shared it among ~4 of them, 5 ms among ~10
// (docs/performance.md, seventh round).
const commitSpacing = 5 * time.Millisecond

// fullGroup is how many queued writes make the committer stop waiting out
// commitSpacing: enough to amortise a commit, few enough to bound latency.
const fullGroup = 64

// maxCachedNodes bounds the embedded store's cache of decoded node records
// (about 2 KiB each); beyond it, arbitrary entries are evicted.
const maxCachedNodes = 100_000

var (
	bktNodes   = []byte("nodes")
	bktAtt     = []byte("attestations")
	bktSecrets = []byte("secrets")
	bktAudit   = []byte("audit")
	bktMeta    = []byte("meta")
	// bktLast holds each node's last verdict (lastRec), apart from its
	// record so that an attestation rewrites ~100 bytes, not the EK
	// certificate (schema 2).
	bktLast = []byte("lastverdict")
)

// schemaVersion is the embedded store's layout; migrateSchema brings an
// older file up to it when it opens.
const schemaVersion = "3"

// embedded is the bbolt store. Writes go through one committer goroutine
// that groups whatever writes are queued while the previous commit syncs
// into the next transaction ("group commit"): each caller returns only after
// the transaction holding its write has been fsynced, so nothing
// acknowledged is lost, yet one fsync serves many concurrent callers. When
// idle, a write commits at once (no batching delay).
type embedded struct {
	db  *bolt.DB
	log *slog.Logger
	now func() time.Time

	mu     sync.RWMutex // guards closed; held (R) by senders on ops
	closed bool
	ops    chan *writeOp
	done   chan struct{}

	// unbatched makes every write its own transaction and fsync: the
	// baseline the benchmarks compare group commit against.
	unbatched bool
	onCommit  func(writes int, took time.Duration)
	// updateMu makes each write transaction and its cache updates one
	// step: bbolt serialises the transactions but not what follows them,
	// and a write started in between would read a node older than the
	// file's. Uncontended under the committer, its only caller then.
	updateMu sync.Mutex

	// Quote nonces live in memory only (see IssueNonce).
	nonces nonceTable

	// nodes caches decoded node records as committed (see nodeCache).
	nodes nodeCache
	// head is the committed head of the audit chain, nil until the first
	// commit that appends (the committer reads the rest of the time).
	headMu sync.Mutex
	head   *AuditRecord
}

var _ Store = (*embedded)(nil)

type writeOp struct {
	fn  func(tx *txn) error
	err error
	res chan error
}

// txn is a write transaction and the node records its ops wrote, which
// reach the node cache only once the transaction has committed.
type txn struct {
	*bolt.Tx
	nodes map[string]*nodeRec // nil: deleted
	last  map[string]lastRec  // last verdicts written (zero: deleted)
	head  *AuditRecord        // the audit chain's head, once an op appended
}

func (s *embedded) update(fn func(tx *txn) error) error {
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	t := &txn{nodes: map[string]*nodeRec{}, last: map[string]lastRec{}}
	err := s.db.Update(func(tx *bolt.Tx) error {
		t.Tx = tx
		return fn(t)
	})
	if err == nil {
		s.nodes.committed(t.nodes, t.last)
		if t.head != nil {
			s.headMu.Lock()
			s.head = t.head
			s.headMu.Unlock()
		}
	}
	return err
}

// logicalError marks an error an op returned before writing anything: the
// transaction stays good for the other ops of its group.
type logicalError struct{ err error }

func (e logicalError) Error() string { return e.err.Error() }
func (e logicalError) Unwrap() error { return e.err }

func logical(err error) error { return logicalError{err} }

// OpenEmbedded opens (creating if needed, mode 0700) the embedded store in
// dir: one bbolt file, EmbeddedFile. Only one process may open it at a time.
func OpenEmbedded(ctx context.Context, dir string, opts Options) (Store, error) {
	return openEmbedded(dir, opts, true)
}

// OpenEmbeddedExisting opens the embedded store in dir like OpenEmbedded,
// but only if dir/EmbeddedFile already exists: it creates neither the
// directory nor the file. A missing store is an error wrapping
// fs.ErrNotExist that names the file.
func OpenEmbeddedExisting(ctx context.Context, dir string, opts Options) (Store, error) {
	return openEmbedded(dir, opts, false)
}

func openEmbedded(dir string, opts Options, create bool) (Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("store: embedded store needs a data directory: %w", ErrInvalid)
	}
	path := filepath.Join(dir, EmbeddedFile)
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: creating data directory: %w", err)
		}
	} else {
		fi, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("store: no embedded store at %s: %w", path, fs.ErrNotExist)
		} else if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("store: %s is not a store file: %w", path, ErrInvalid)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("store: opening %s (is another attestd using this data directory?): %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bktNodes, bktAtt, bktSecrets, bktAudit, bktMeta, bktLast, bktJoins, bktPrefix, bktPrefixRecs, bktSandboxes, bktDecisions} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return migrateSchema(tx)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: initialising %s: %w", path, err)
	}
	s := &embedded{db: db, log: opts.Logger, now: opts.Now, onCommit: opts.OnCommit, ops: make(chan *writeOp, maxGroup), done: make(chan struct{})}
	s.nonces.perNode = opts.maxNoncesPerNode()
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	go s.committer()
	return classified(s), nil
}

func (s *embedded) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.ops)
	s.mu.Unlock()
	<-s.done
	return s.db.Close()
}

// write runs fn in a write transaction shared with other queued writes and
// returns once that transaction is durable. fn must do all its checks before
// its first write and return them wrapped with logical(); any other error
// rolls back the group, which is then retried one op per transaction.
func (s *embedded) write(ctx context.Context, fn func(tx *txn) error) error {
	if s.unbatched {
		return s.writeAlone(fn)
	}
	op := &writeOp{fn: fn, res: make(chan error, 1)}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.ops <- op:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	return unwrapLogical(<-op.res)
}

// unwrapLogical returns the error an op's caller sees: a logical() error
// unwrapped, any other as it is.
func unwrapLogical(err error) error {
	var le logicalError
	if errors.As(err, &le) {
		return le.err
	}
	return err
}

// applyOps runs ops in tx in order, setting each op's err. The first error
// that is not logical() aborts tx: applyOps returns it and the caller rolls
// back.
func applyOps(tx *txn, ops ...*writeOp) error {
	for _, op := range ops {
		op.err = runOp(op.fn, tx)
		var le logicalError
		if op.err != nil && !errors.As(op.err, &le) {
			return op.err
		}
	}
	return nil
}

// commitAlone runs op in a transaction of its own and returns the
// transaction's error, else op's own (logical errors still wrapped).
func (s *embedded) commitAlone(op *writeOp) error {
	op.err = nil
	if err := s.update(func(tx *txn) error { return applyOps(tx, op) }); err != nil {
		return err
	}
	return op.err
}

// runOp runs one write, turning a panic (e.g. in an UpdateNode callback)
// into an error that rolls its transaction back instead of killing the
// committer.
func runOp(fn func(tx *txn) error, tx *txn) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store: write panicked: %v", r)
		}
	}()
	return fn(tx)
}

// writeAlone runs fn in a transaction of its own.
func (s *embedded) writeAlone(fn func(tx *txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return unwrapLogical(s.commitAlone(&writeOp{fn: fn}))
}

// gather adds to a group commit whatever is already queued on ops, up to
// max operations. It never waits for more.
func gather[T any](group []T, ops <-chan T, max int) []T {
	for len(group) < max {
		select {
		case op, ok := <-ops:
			if !ok {
				return group
			}
			group = append(group, op)
		default:
			return group
		}
	}
	return group
}

// gatherFor adds to a group commit what arrives on ops within d, and
// stops early once the group has enough operations.
func gatherFor[T any](group []T, ops <-chan T, d time.Duration, enough int) []T {
	t := time.NewTimer(d)
	defer t.Stop()
	for len(group) < enough {
		select {
		case op, ok := <-ops:
			if !ok {
				return group
			}
			group = append(group, op)
		case <-t.C:
			return group
		}
	}
	return group
}

func (s *embedded) committer() {
	defer close(s.done)
	group := make([]*writeOp, 0, maxGroup)
	var last time.Time // when the previous commit started
	for first := range s.ops {
		group = append(group[:0], first)
		if wait := commitSpacing - time.Since(last); wait > 0 {
			group = gatherFor(group, s.ops, wait, fullGroup)
		}
		group = gather(group, s.ops, maxGroup)
		last = time.Now()
		err := s.update(func(tx *txn) error { return applyOps(tx, group...) })
		if err == nil {
			if s.onCommit != nil {
				s.onCommit(len(group), time.Since(last))
			}
			for _, op := range group {
				op.res <- op.err
			}
			continue
		}
		if len(group) == 1 {
			group[0].res <- err
			continue
		}
		// One op failed hard: retry each alone so the others are not lost.
		for _, op := range group {
			op.res <- s.commitAlone(op)
		}
	}
}

func (s *embedded) view(fn func(tx *bolt.Tx) error) error {
	s.mu.RLock() // Close waits for running reads
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.db.View(fn)
}

// ---- records as stored (JSON; times as Unix nanoseconds) ----

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return normTime(t).UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// nodeRec is a node as the embedded store keeps it. The last verdict
// (LV*) is stored apart, in bktLast (putLast); the PostgreSQL store keeps
// it in the node's row.
type nodeRec struct {
	ID        string    `json:"id"`
	EKPublic  []byte    `json:"ek_public"`
	EKCert    []byte    `json:"ek_cert,omitempty"`
	AKPublic  []byte    `json:"ak_public"`
	AKName    []byte    `json:"ak_name"`
	State     NodeState `json:"state"`
	ChHash    []byte    `json:"challenge_hash,omitempty"`
	ChExpires int64     `json:"challenge_expires,omitempty"`
	LVID      string    `json:"-"`
	LVPolicy  string    `json:"-"`
	LVAllow   bool      `json:"-"`
	LVTime    int64     `json:"-"`
	LVUpdated int64     `json:"-"` // when the last verdict was recorded
	Created   int64     `json:"created"`
	Updated   int64     `json:"updated"`
}

// lastRec is a node's last verdict in bktLast.
type lastRec struct {
	ID      string `json:"id"`
	Policy  string `json:"policy,omitempty"`
	Allow   bool   `json:"allow,omitempty"`
	Time    int64  `json:"time"`
	Updated int64  `json:"updated"` // when it was recorded: the node's UpdatedAt
}

func (r *nodeRec) last() lastRec {
	if r.LVID == "" {
		return lastRec{}
	}
	return lastRec{ID: r.LVID, Policy: r.LVPolicy, Allow: r.LVAllow, Time: r.LVTime, Updated: r.LVUpdated}
}

func (r *nodeRec) setLast(lv lastRec) {
	r.LVID, r.LVPolicy, r.LVAllow, r.LVTime, r.LVUpdated = lv.ID, lv.Policy, lv.Allow, lv.Time, lv.Updated
}

// migrateSchema creates the schema on a new file, or brings an older one up
// to schemaVersion, in the open's transaction: all or nothing.
func migrateSchema(tx *bolt.Tx) error {
	m := tx.Bucket(bktMeta)
	switch v := string(m.Get([]byte("schema"))); v {
	case schemaVersion:
		return nil
	case "":
		if tx.Bucket(bktNodes).Stats().KeyN != 0 {
			return errors.New("store has nodes but no schema version: not an attestd store")
		}
	case "2":
		// Version 3 marks END records in the launch records' sandbox
		// index (launchlog.go); every record stored before is a launch
		// event, whose mark (empty) it already has.
	case "1":
		// Version 1 kept the last verdict in the node's record: decoded
		// together, nodeRec takes the rest (its LV fields are not JSON).
		type v1Node struct {
			nodeRec
			LastID string `json:"last_attestation"`
			Policy string `json:"last_policy"`
			Allow  bool   `json:"last_allow"`
			Time   int64  `json:"last_time"`
		}
		nb, lb := tx.Bucket(bktNodes), tx.Bucket(bktLast)
		type kv struct{ k, v []byte }
		var rewrite []kv
		err := nb.ForEach(func(k, v []byte) error {
			var v1 v1Node
			if err := json.Unmarshal(v, &v1); err != nil {
				return fmt.Errorf("corrupt node %q: %w", k, err)
			}
			if v1.LastID != "" {
				b, err := json.Marshal(lastRec{ID: v1.LastID, Policy: v1.Policy, Allow: v1.Allow, Time: v1.Time, Updated: v1.Updated})
				if err != nil {
					return err
				}
				if err := lb.Put(bytes.Clone(k), b); err != nil {
					return err
				}
			}
			b, err := json.Marshal(&v1.nodeRec) // without the last verdict
			if err != nil {
				return err
			}
			rewrite = append(rewrite, kv{bytes.Clone(k), b})
			return nil
		})
		if err != nil {
			return err
		}
		for _, e := range rewrite { // not while iterating the bucket
			if err := nb.Put(e.k, e.v); err != nil {
				return err
			}
		}
		// Version 2 to 3 changes no stored bytes (see "2").
	default:
		return fmt.Errorf("schema version %q is not supported by this attestd (want %s or older)", v, schemaVersion)
	}
	return m.Put([]byte("schema"), []byte(schemaVersion))
}

func toNodeRec(n *Node) nodeRec {
	r := nodeRec{ID: n.ID, EKPublic: n.EKPublic, EKCert: n.EKCert, AKPublic: n.AKPublic, AKName: n.AKName, State: n.State, Created: nanos(n.CreatedAt), Updated: nanos(n.UpdatedAt)}
	if n.Challenge != nil {
		r.ChHash, r.ChExpires = n.Challenge.SecretHash, nanos(n.Challenge.Expires)
	}
	if v := n.LastVerdict; v != nil {
		r.LVID, r.LVPolicy, r.LVAllow, r.LVTime = v.AttestationID, v.Policy, v.Allow, nanos(v.Time)
	}
	return r
}

func (r *nodeRec) node() Node {
	n := Node{ID: r.ID, EKPublic: r.EKPublic, EKCert: r.EKCert, AKPublic: r.AKPublic, AKName: r.AKName, State: r.State, CreatedAt: fromNanos(r.Created), UpdatedAt: fromNanos(max(r.Updated, r.LVUpdated))}
	if r.ChHash != nil {
		n.Challenge = &Challenge{SecretHash: r.ChHash, Expires: fromNanos(r.ChExpires)}
	}
	if r.LVID != "" {
		n.LastVerdict = &LastVerdict{AttestationID: r.LVID, Policy: r.LVPolicy, Allow: r.LVAllow, Time: fromNanos(r.LVTime)}
	}
	return n
}

type attRec struct {
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

func toAttRec(a *Attestation) attRec {
	return attRec{ID: a.ID, Node: a.NodeID, Policy: a.Policy, Allow: a.Allow, Reasons: a.Reasons, Sandbox: a.SandboxID, GuestPub: a.GuestPublicKey, Secrets: a.Secrets, Created: nanos(a.CreatedAt), RelExp: nanos(a.ReleaseExpires), Released: nanos(a.ReleasedAt)}
}

func (r *attRec) att() Attestation {
	return Attestation{ID: r.ID, NodeID: r.Node, Policy: r.Policy, Allow: r.Allow, Reasons: r.Reasons, SandboxID: r.Sandbox, GuestPublicKey: r.GuestPub, Secrets: r.Secrets, CreatedAt: fromNanos(r.Created), ReleaseExpires: fromNanos(r.RelExp), ReleasedAt: fromNanos(r.Released)}
}

type secretRec struct {
	Name    string `json:"name"`
	Version uint64 `json:"version"`
	Size    int    `json:"size"`
	Desc    string `json:"description,omitempty"`
	Created int64  `json:"created"`
	Updated int64  `json:"updated"`
	CT      []byte `json:"ciphertext"`
}

func (r *secretRec) meta() SecretMeta {
	return SecretMeta{Name: r.Name, Version: r.Version, Size: r.Size, Description: r.Desc, CreatedAt: fromNanos(r.Created), UpdatedAt: fromNanos(r.Updated)}
}

// auditRec is an audit record as stored. Details are kept as base64 bytes,
// never re-encoded, so the hash covers exactly what was written.
type auditRec struct {
	Seq     uint64 `json:"seq"`
	Time    int64  `json:"time"`
	Kind    string `json:"kind"`
	Node    string `json:"node,omitempty"`
	Subject string `json:"subject,omitempty"`
	Details []byte `json:"details"`
	Prev    []byte `json:"prev"`
	Hash    []byte `json:"hash"`
}

func (r *auditRec) record() AuditRecord {
	return AuditRecord{Seq: r.Seq, Time: fromNanos(r.Time), Kind: AuditKind(r.Kind), NodeID: r.Node, Subject: r.Subject, Details: json.RawMessage(r.Details), Prev: r.Prev, Hash: r.Hash}
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func get[T any](b *bolt.Bucket, key []byte) (*T, error) {
	v := b.Get(key)
	if v == nil {
		return nil, nil
	}
	var r T
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("store: corrupt %T record %x: %w", r, key, err)
	}
	return &r, nil
}

func put(b *bolt.Bucket, key []byte, v any) error {
	buf, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, buf)
}

// ---- nodes ----

func (s *embedded) CreateNode(ctx context.Context, n Node) error {
	if err := validateNode(&n); err != nil {
		return err
	}
	now := nanos(s.now())
	rec := toNodeRec(&n)
	rec.Created, rec.Updated, rec.LVUpdated = now, now, now
	return s.write(ctx, func(tx *txn) error {
		if tx.Bucket(bktNodes).Get([]byte(n.ID)) != nil { // a transaction sees its own writes
			return logical(fmt.Errorf("node %s: %w", n.ID, ErrConflict))
		}
		return s.putNode(tx, &rec)
	})
}

func (s *embedded) GetNode(ctx context.Context, id string) (Node, error) {
	r, err := s.readNode(id)
	if err != nil {
		return Node{}, err
	}
	if r == nil {
		return Node{}, fmt.Errorf("node %s: %w", id, ErrNotFound)
	}
	return r.node(), nil
}

func (s *embedded) UpdateNode(ctx context.Context, id string, fn func(*Node) error) (Node, error) {
	var out Node
	err := s.write(ctx, func(tx *txn) error {
		r, err := s.nodeIn(tx, id)
		if err != nil {
			return err
		}
		if r == nil {
			return logical(fmt.Errorf("node %s: %w", id, ErrNotFound))
		}
		n := r.node()
		if err := fn(&n); err != nil {
			return logical(err)
		}
		if n.ID != r.ID || !bytes.Equal(n.EKPublic, r.EKPublic) {
			return logical(fmt.Errorf("node %s: UpdateNode may not change ID or EKPublic: %w", id, ErrInvalid))
		}
		if err := validateNode(&n); err != nil {
			return logical(err)
		}
		nr := toNodeRec(&n)
		nr.Created, nr.Updated, nr.LVUpdated = r.Created, nanos(s.now()), r.LVUpdated
		if nr.last() != r.last() { // fn changed the last verdict
			nr.LVUpdated = nr.Updated
		}
		out = nr.node()
		return s.putNode(tx, &nr)
	})
	return out, err
}

func (s *embedded) ListNodes(ctx context.Context) ([]Node, error) {
	var out []Node
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bktNodes).ForEach(func(k, v []byte) error {
			r, err := decodeNodeRec(tx, k, v)
			if err != nil {
				return err
			}
			out = append(out, r.node())
			return nil
		})
	})
	return out, err
}

func (s *embedded) DeleteNode(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *txn) error {
		if tx.Bucket(bktNodes).Get([]byte(id)) == nil {
			return logical(fmt.Errorf("node %s: %w", id, ErrNotFound))
		}
		if err := deletePrefix(tx, id); err != nil {
			return err
		}
		if err := deleteSandboxes(tx, id); err != nil {
			return err
		}
		return deleteNode(tx, id)
	})
}

// ---- nonces ----

// IssueNonce keeps the nonce in memory only (nonceTable). The embedded
// store has exactly one process (the file is locked), and a nonce lives for
// seconds: after a restart every outstanding nonce is unknown, so a replay
// across a restart is still refused (fail closed; the host asks for a new
// challenge). This spares two of the five durable writes of an attestation
// and its release.
func (s *embedded) IssueNonce(ctx context.Context, n Nonce) error {
	if err := validateNonce(&n); err != nil {
		return err
	}
	if s.isClosed() {
		return ErrClosed
	}
	return s.nonces.issue(sha256.Sum256(n.Value), n.NodeID, nanos(n.Expires), nanos(s.now()))
}

func (s *embedded) ConsumeNonce(ctx context.Context, value []byte, nodeID string, now time.Time) error {
	if limits.CheckNonceSize(len(value)) != nil {
		return fmt.Errorf("nonce of %d bytes: %w", len(value), ErrNonceUnknown)
	}
	if s.isClosed() {
		return ErrClosed
	}
	return s.nonces.consume(sha256.Sum256(value), nodeID, nanos(now))
}

func (s *embedded) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// ---- attestations ----

func (s *embedded) RecordAttestation(ctx context.Context, a Attestation) (AuditRecord, error) {
	if a.CreatedAt.IsZero() {
		a.CreatedAt = s.now()
	}
	e, err := prepareAttestation(&a)
	if err != nil {
		return AuditRecord{}, err
	}
	rec := toAttRec(&a)
	var out AuditRecord
	err = s.write(ctx, func(tx *txn) error {
		ab := attBucket(tx)
		if ab.Get([]byte(a.ID)) != nil {
			return logical(fmt.Errorf("attestation %s: %w", a.ID, ErrConflict))
		}
		if tx.Bucket(bktNodes).Get([]byte(a.NodeID)) == nil { // a transaction sees its own writes
			return logical(fmt.Errorf("node %s: %w", a.NodeID, ErrNotFound))
		}
		head, err := s.auditHeadIn(tx)
		if err != nil {
			return err
		}
		// All checks done: write.
		if err := put(ab, []byte(a.ID), rec); err != nil {
			return err
		}
		if err := putLast(tx, a.NodeID, lastRec{ID: a.ID, Policy: a.Policy, Allow: a.Allow, Time: rec.Created, Updated: nanos(s.now())}); err != nil {
			return err
		}
		out, err = appendAudit(tx, head, e)
		return err
	})
	return out, err
}

// attFill is how full a page of attestations is left when it splits.
// attestd's attestation ids begin with their time, so nearly every insert
// is at the end of the bucket, where bbolt's default (half-full pages)
// would leave every page half empty for good; a release rewrites a record
// a few bytes longer, which the rest of the page absorbs.
const attFill = 0.9

// attBucket returns the attestations bucket of a write transaction, set
// to split its pages at attFill.
func attBucket(tx *txn) *bolt.Bucket {
	b := tx.Bucket(bktAtt)
	b.FillPercent = attFill
	return b
}

func (s *embedded) GetAttestation(ctx context.Context, id string) (Attestation, error) {
	var a Attestation
	err := s.view(func(tx *bolt.Tx) error {
		r, err := get[attRec](tx.Bucket(bktAtt), []byte(id))
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("attestation %s: %w", id, ErrNotFound)
		}
		a = r.att()
		return nil
	})
	return a, err
}

func (s *embedded) ConsumeRelease(ctx context.Context, id string, now time.Time) (Attestation, AuditRecord, error) {
	var out Attestation
	var rec AuditRecord
	t := nanos(now)
	err := s.write(ctx, func(tx *txn) error {
		b := attBucket(tx)
		r, err := get[attRec](b, []byte(id))
		if err != nil {
			return err
		}
		if r == nil {
			return logical(fmt.Errorf("attestation %s: %w", id, ErrNotFound))
		}
		if err := checkRelease(id, r.Allow && r.RelExp != 0, r.Released != 0, t >= r.RelExp); err != nil {
			return logical(err)
		}
		r.Released = t
		a := r.att()
		e, err := releaseEntry(&a, now)
		if err != nil {
			return logical(err)
		}
		head, err := s.auditHeadIn(tx)
		if err != nil {
			return err
		}
		// All checks done: write the mark and its audit record together.
		if err := put(b, []byte(id), r); err != nil {
			return err
		}
		if rec, err = appendAudit(tx, head, e); err != nil {
			return err
		}
		out = a
		return nil
	})
	if err != nil {
		return Attestation{}, AuditRecord{}, err
	}
	return out, rec, nil
}

// ---- secrets ----

func (s *embedded) PutSecret(ctx context.Context, sec Secret, prevVersion uint64) error {
	if err := validateSecret(&sec, prevVersion); err != nil {
		return err
	}
	now := nanos(s.now())
	return s.write(ctx, func(tx *txn) error {
		b := tx.Bucket(bktSecrets)
		old, err := get[secretRec](b, []byte(sec.Name))
		if err != nil {
			return err
		}
		var cur uint64
		created := nanos(sec.CreatedAt)
		if old != nil {
			cur, created = old.Version, old.Created
		}
		if cur != prevVersion {
			return logical(fmt.Errorf("secret %q is at version %d, not %d: %w", sec.Name, cur, prevVersion, ErrConflict))
		}
		if created == 0 {
			created = now
		}
		upd := nanos(sec.UpdatedAt)
		if upd == 0 {
			upd = now
		}
		return put(b, []byte(sec.Name), secretRec{Name: sec.Name, Version: sec.Version, Size: sec.Size, Desc: sec.Description, Created: created, Updated: upd, CT: sec.Ciphertext})
	})
}

func (s *embedded) GetSecret(ctx context.Context, name string) (Secret, error) {
	var out Secret
	err := s.view(func(tx *bolt.Tx) error {
		r, err := get[secretRec](tx.Bucket(bktSecrets), []byte(name))
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("secret %q: %w", name, ErrNotFound)
		}
		out = Secret{SecretMeta: r.meta(), Ciphertext: r.CT}
		return nil
	})
	return out, err
}

func (s *embedded) ListSecrets(ctx context.Context) ([]SecretMeta, error) {
	var out []SecretMeta
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bktSecrets).ForEach(func(k, v []byte) error {
			var r secretRec
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("store: corrupt secret %q: %w", k, err)
			}
			out = append(out, r.meta())
			return nil
		})
	})
	return out, err
}

func (s *embedded) DeleteSecret(ctx context.Context, name string) error {
	return s.write(ctx, func(tx *txn) error {
		b := tx.Bucket(bktSecrets)
		if b.Get([]byte(name)) == nil {
			return logical(fmt.Errorf("secret %q: %w", name, ErrNotFound))
		}
		return b.Delete([]byte(name))
	})
}

// ---- audit ----

// auditHeadIn returns the head of the audit chain as tx sees it: what an
// earlier op of tx appended, else the committed head (cached after the
// first read; the chain only grows through appendAudit).
func (s *embedded) auditHeadIn(tx *txn) (*AuditRecord, error) {
	if tx.head != nil {
		return tx.head, nil
	}
	s.headMu.Lock()
	h := s.head
	s.headMu.Unlock()
	if h != nil {
		return h, nil
	}
	return auditHead(tx.Tx)
}

func auditHead(tx *bolt.Tx) (*AuditRecord, error) {
	k, v := tx.Bucket(bktAudit).Cursor().Last()
	if k == nil {
		return nil, nil
	}
	var r auditRec
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("store: corrupt audit head %x: %w", k, err)
	}
	rec := r.record()
	return &rec, nil
}

func appendAudit(tx *txn, head *AuditRecord, e AuditEntry) (AuditRecord, error) {
	r := nextAuditRecord(head, e)
	b := tx.Bucket(bktAudit)
	b.FillPercent = 0.95
	err := put(b, seqKey(r.Seq), auditRec{Seq: r.Seq, Time: nanos(r.Time), Kind: string(r.Kind), Node: r.NodeID, Subject: r.Subject, Details: r.Details, Prev: r.Prev, Hash: r.Hash})
	if err == nil {
		h := r
		tx.head = &h
	}
	return r, err
}

func (s *embedded) AppendAudit(ctx context.Context, e AuditEntry) (AuditRecord, error) {
	if err := validateAuditEntry(&e, s.now); err != nil {
		return AuditRecord{}, err
	}
	var out AuditRecord
	err := s.write(ctx, func(tx *txn) error {
		head, err := s.auditHeadIn(tx)
		if err != nil {
			return err
		}
		out, err = appendAudit(tx, head, e)
		return err
	})
	return out, err
}

func (s *embedded) ReadAudit(ctx context.Context, after uint64, limit int) ([]AuditRecord, error) {
	if limit < 1 || limit > 1000 {
		return nil, fmt.Errorf("audit read limit %d: want 1..1000: %w", limit, ErrInvalid)
	}
	var out []AuditRecord
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bktAudit).Cursor()
		k, v := c.Seek(seqKey(after + 1))
		if after == 0 {
			k, v = c.First() // every record, even one under a key below 1
		}
		for ; k != nil && len(out) < limit; k, v = c.Next() {
			var r auditRec
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("store: corrupt audit record %x: %w", k, err)
			}
			out = append(out, r.record())
		}
		return nil
	})
	return out, err
}

func (s *embedded) AuditHead(ctx context.Context) (AuditRecord, error) {
	var out AuditRecord
	err := s.view(func(tx *bolt.Tx) error {
		h, err := auditHead(tx)
		if err != nil {
			return err
		}
		if h == nil {
			return fmt.Errorf("audit log is empty: %w", ErrNotFound)
		}
		out = *h
		return nil
	})
	return out, err
}

// ---- purge ----

func (s *embedded) PurgeExpired(ctx context.Context, now time.Time) (int, error) {
	t := nanos(now)
	if s.isClosed() {
		return 0, ErrClosed
	}
	purged := s.nonces.expire(t)
	// Find the nodes whose challenge expired in a read transaction, which
	// does not hold up writes (a byte check skips the records without a
	// challenge); then clear them in one write, each checked again as that
	// transaction sees it.
	var expired []string
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bktNodes).ForEach(func(k, v []byte) error {
			if !bytes.Contains(v, []byte(`"challenge_hash"`)) {
				return nil
			}
			var r nodeRec
			if json.Unmarshal(v, &r) == nil && r.ChHash != nil && r.ChExpires <= t {
				expired = append(expired, string(k))
			}
			return nil
		})
	})
	if err != nil || len(expired) == 0 {
		return purged, err
	}
	n := purged
	err = s.write(ctx, func(tx *txn) error {
		n = purged
		for _, id := range expired {
			r, err := s.nodeIn(tx, id)
			if err != nil {
				return err
			}
			if r == nil || r.ChHash == nil || r.ChExpires > t {
				continue
			}
			r.ChHash, r.ChExpires = nil, 0
			if err := s.putNode(tx, r); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// ---- retention ----

// sealKey holds the audit seal in bktMeta.
var sealKey = []byte("audit_seal")

type sealRec struct {
	Seq  uint64 `json:"seq"`
	Hash []byte `json:"hash"`
	Sig  []byte `json:"sig"`
}

func (s *embedded) AuditSeal(ctx context.Context) (Seal, error) {
	var out Seal
	err := s.view(func(tx *bolt.Tx) error {
		r, err := get[sealRec](tx.Bucket(bktMeta), sealKey)
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("audit log never purged: %w", ErrNotFound)
		}
		out = Seal{Checkpoint: Checkpoint{Seq: r.Seq, Hash: r.Hash}, Sig: r.Sig}
		return nil
	})
	return out, err
}

func (s *embedded) PurgeSealed(ctx context.Context, seal Seal, limit int) (Purged, error) {
	if err := validatePurge(seal, limit); err != nil {
		return Purged{}, err
	}
	var out Purged
	err := s.write(ctx, func(tx *txn) error {
		out = Purged{}
		meta, ab := tx.Bucket(bktMeta), tx.Bucket(bktAudit)
		old, err := get[sealRec](meta, sealKey)
		if err != nil {
			return err
		}
		var oldSeal Checkpoint
		if old != nil {
			oldSeal = Checkpoint{Seq: old.Seq, Hash: old.Hash}
		}
		head, err := s.auditHeadIn(tx)
		if err != nil {
			return err
		}
		var headSeq uint64
		if head != nil {
			headSeq = head.Seq
		}
		var atSeal []byte
		if r, err := get[auditRec](ab, seqKey(seal.Seq)); err != nil {
			return err
		} else if r != nil {
			atSeal = r.Hash
		}
		isNew, err := checkSeal(seal, oldSeal, headSeq, atSeal)
		if err != nil {
			return logical(err)
		}
		// All checks done: write.
		if isNew {
			if err := put(meta, sealKey, sealRec{Seq: seal.Seq, Hash: seal.Hash, Sig: seal.Sig}); err != nil {
				return err
			}
		}
		type victim struct {
			key     []byte
			verdict string // attestation id of a verdict record
		}
		var victims []victim
		c := ab.Cursor()
		k, v := c.First()
		for ; k != nil && len(victims) < limit; k, v = c.Next() {
			if len(k) == 8 && binary.BigEndian.Uint64(k) > seal.Seq {
				break
			}
			var r auditRec
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("store: corrupt audit record %x: %w", k, err)
			}
			vic := victim{key: bytes.Clone(k)}
			if AuditKind(r.Kind) == KindVerdict {
				vic.verdict = r.Subject
			}
			victims = append(victims, vic)
		}
		out.More = k != nil && (len(k) != 8 || binary.BigEndian.Uint64(k) <= seal.Seq)
		att := tx.Bucket(bktAtt)
		for _, vic := range victims {
			if err := ab.Delete(vic.key); err != nil {
				return err
			}
			out.Audit++
			if vic.verdict == "" || att.Get([]byte(vic.verdict)) == nil {
				continue
			}
			if err := att.Delete([]byte(vic.verdict)); err != nil {
				return err
			}
			out.Attestations++
		}
		return nil
	})
	if err != nil {
		return Purged{}, err
	}
	return out, nil
}
