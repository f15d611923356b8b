// Package storetest is the conformance suite every store.Store
// implementation must pass: the embedded store and PostgreSQL run the same
// tests, including the races on single-use values.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

// Run runs the suite. open must return a fresh, empty store for each call;
// Run closes it.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Nodes", testNodes},
		{"NodeValidation", testNodeValidation},
		{"UpdatePanic", testUpdatePanic},
		{"Challenge", testChallenge},
		{"ChallengeRace", testChallengeRace},
		{"Nonces", testNonces},
		{"NoncesPerNode", testNoncesPerNode},
		{"NonceRace", testNonceRace},
		{"Attestations", testAttestations},
		{"ReleaseRace", testReleaseRace},
		{"ReleaseAudited", testReleaseAudited},
		{"Secrets", testSecrets},
		{"SecretRace", testSecretRace},
		{"Audit", testAudit},
		{"AuditConcurrent", testAuditConcurrent},
		{"Purge", testPurge},
		{"Retention", testRetention},
		{"VaultCheck", testVaultCheck},
		{"Joins", testJoins},
		{"JoinApproveRace", testJoinApproveRace},
		{"LaunchPrefix", testLaunchPrefix},
		{"LaunchPrefixRace", testLaunchPrefixRace},
		{"Sandboxes", testSandboxes},
		{"Decisions", testDecisions},
		{"DecisionKeys", testDecisionKeys},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tc.fn(t, s)
		})
	}
}

var t0 = time.Date(2026, 11, 22, 5, 0, 0, 123456789, time.UTC)

func random(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// NewNode returns a valid, not yet stored node with random keys.
func NewNode(t testing.TB) store.Node {
	ek := random(t, 90)
	return store.Node{ID: limits.NodeID(ek), EKPublic: ek, AKPublic: random(t, 88), AKName: random(t, 34), State: store.NodeEnrolled}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func testNodes(t *testing.T, s store.Store) {
	ctx := context.Background()
	n := NewNode(t)
	n.EKCert = []byte("cert")
	must(t, s.CreateNode(ctx, n))
	wantErr(t, "create twice", s.CreateNode(ctx, n), store.ErrConflict)
	got, err := s.GetNode(ctx, n.ID)
	must(t, err)
	if !bytes.Equal(got.EKPublic, n.EKPublic) || !bytes.Equal(got.AKName, n.AKName) || !bytes.Equal(got.EKCert, n.EKCert) || got.State != store.NodeEnrolled || got.Challenge != nil || got.LastVerdict != nil {
		t.Fatalf("GetNode = %+v, want %+v", got, n)
	}
	if got.CreatedAt.IsZero() {
		t.Fatal("CreatedAt not set")
	}
	_, err = s.GetNode(ctx, "sha256:00")
	wantErr(t, "get missing", err, store.ErrNotFound)

	// Update sets a challenge; a failing fn aborts without writing.
	exp := t0.Add(time.Minute)
	u, err := s.UpdateNode(ctx, n.ID, func(n *store.Node) error {
		n.Challenge = &store.Challenge{SecretHash: bytes.Repeat([]byte{7}, 32), Expires: exp}
		return nil
	})
	must(t, err)
	if u.Challenge == nil || !u.Challenge.Expires.Equal(exp.Truncate(time.Microsecond)) {
		t.Fatalf("UpdateNode returned challenge %+v", u.Challenge)
	}
	boom := errors.New("boom")
	_, err = s.UpdateNode(ctx, n.ID, func(n *store.Node) error { n.State = store.NodeRevoked; return boom })
	wantErr(t, "update fn error", err, boom)
	_, err = s.UpdateNode(ctx, n.ID, func(n *store.Node) error { n.EKPublic = []byte("x"); return nil })
	wantErr(t, "update EK", err, store.ErrInvalid)
	_, err = s.UpdateNode(ctx, "sha256:missing", func(*store.Node) error { return nil })
	wantErr(t, "update missing", err, store.ErrNotFound)
	got, err = s.GetNode(ctx, n.ID)
	must(t, err)
	if got.State != store.NodeEnrolled || got.Challenge == nil || !got.Challenge.Expires.Equal(exp.Truncate(time.Microsecond)) || !bytes.Equal(got.Challenge.SecretHash, bytes.Repeat([]byte{7}, 32)) {
		t.Fatalf("after updates: %+v", got)
	}

	n2 := NewNode(t)
	must(t, s.CreateNode(ctx, n2))
	list, err := s.ListNodes(ctx)
	must(t, err)
	if len(list) != 2 || !sort.SliceIsSorted(list, func(i, j int) bool { return list[i].ID < list[j].ID }) {
		t.Fatalf("ListNodes = %d nodes, unsorted or wrong", len(list))
	}
	must(t, s.DeleteNode(ctx, n2.ID))
	wantErr(t, "delete twice", s.DeleteNode(ctx, n2.ID), store.ErrNotFound)
	list, err = s.ListNodes(ctx)
	must(t, err)
	if len(list) != 1 || list[0].ID != n.ID {
		t.Fatalf("ListNodes after delete = %v", list)
	}
}

// testUpdatePanic: a panicking UpdateNode callback fails that call only.
func testUpdatePanic(t *testing.T, s store.Store) {
	ctx := context.Background()
	n := NewNode(t)
	must(t, s.CreateNode(ctx, n))
	_, err := s.UpdateNode(ctx, n.ID, func(n *store.Node) error { n.State = store.NodeRevoked; panic("boom") })
	if err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("panicking update: %v", err)
	}
	got, err := s.UpdateNode(ctx, n.ID, func(n *store.Node) error { n.State = store.NodeActive; return nil })
	must(t, err)
	if got.State != store.NodeActive {
		t.Fatalf("state after updates = %s", got.State)
	}
}

func testNodeValidation(t *testing.T, s store.Store) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		mod  func(*store.Node)
	}{
		{"id not EK digest", func(n *store.Node) { n.ID = "sha256:" + fmt.Sprintf("%064x", 1) }},
		{"no EK", func(n *store.Node) { n.EKPublic = nil }},
		{"no AK", func(n *store.Node) { n.AKPublic = nil }},
		{"no AK name", func(n *store.Node) { n.AKName = nil }},
		{"bad state", func(n *store.Node) { n.State = "bogus" }},
		{"huge cert", func(n *store.Node) { n.EKCert = make([]byte, store.MaxBlob+1) }},
		{"short challenge hash", func(n *store.Node) { n.Challenge = &store.Challenge{SecretHash: []byte{1}, Expires: t0} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := NewNode(t)
			tc.mod(&n)
			wantErr(t, tc.name, s.CreateNode(ctx, n), store.ErrInvalid)
		})
	}
}

func enrolled(t *testing.T, s store.Store, secret []byte, exp time.Time) store.Node {
	n := NewNode(t)
	sum := sha256.Sum256(secret)
	n.Challenge = &store.Challenge{SecretHash: sum[:], Expires: exp}
	must(t, s.CreateNode(context.Background(), n))
	return n
}

func testChallenge(t *testing.T, s store.Store) {
	ctx := context.Background()
	secret := random(t, 32)
	n := enrolled(t, s, secret, t0.Add(time.Minute))
	_, err := store.ConsumeChallenge(ctx, s, n.ID, random(t, 32), t0)
	wantErr(t, "wrong secret", err, store.ErrChallenge)
	_, err = store.ConsumeChallenge(ctx, s, n.ID, secret, t0.Add(time.Minute))
	wantErr(t, "expired", err, store.ErrChallengeExpired)
	_, err = store.ConsumeChallenge(ctx, s, "sha256:nope", secret, t0)
	wantErr(t, "unknown node", err, store.ErrNotFound)
	got, err := store.ConsumeChallenge(ctx, s, n.ID, secret, t0)
	must(t, err)
	if got.State != store.NodeActive || got.Challenge != nil {
		t.Fatalf("after activation: %+v", got)
	}
	_, err = store.ConsumeChallenge(ctx, s, n.ID, secret, t0)
	wantErr(t, "replayed activation", err, store.ErrChallenge)
	stored, err := s.GetNode(ctx, n.ID)
	must(t, err)
	if stored.State != store.NodeActive || stored.Challenge != nil {
		t.Fatalf("stored after activation: %+v", stored)
	}
}

// race runs fn from n goroutines at once and returns how many succeeded and
// the distinct errors of the others.
func race(n int, fn func() error) (int, []error) {
	var wg sync.WaitGroup
	var ok atomic.Int32
	var mu sync.Mutex
	var errs []error
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			if err := fn(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			ok.Add(1)
		})
	}
	close(start)
	wg.Wait()
	return int(ok.Load()), errs
}

func testChallengeRace(t *testing.T, s store.Store) {
	secret := random(t, 32)
	n := enrolled(t, s, secret, t0.Add(time.Minute))
	ok, errs := race(12, func() error {
		_, err := store.ConsumeChallenge(context.Background(), s, n.ID, secret, t0)
		return err
	})
	if ok != 1 {
		t.Fatalf("%d concurrent activations succeeded, want exactly 1", ok)
	}
	for _, err := range errs {
		wantErr(t, "losing activation", err, store.ErrChallenge)
	}
}

func testNonces(t *testing.T, s store.Store) {
	ctx := context.Background()
	node := "sha256:node-a"
	v := random(t, 32)
	must(t, s.IssueNonce(ctx, store.Nonce{Value: v, NodeID: node, Expires: t0.Add(time.Minute)}))
	wantErr(t, "issue twice", s.IssueNonce(ctx, store.Nonce{Value: v, NodeID: node, Expires: t0.Add(time.Minute)}), store.ErrConflict)
	for _, bad := range []store.Nonce{
		{Value: random(t, 8), NodeID: node, Expires: t0},
		{Value: random(t, 65), NodeID: node, Expires: t0},
		{Value: random(t, 32), Expires: t0},
		{Value: random(t, 32), NodeID: node},
	} {
		wantErr(t, "bad nonce", s.IssueNonce(ctx, bad), store.ErrInvalid)
	}
	wantErr(t, "other node", s.ConsumeNonce(ctx, v, "sha256:node-b", t0), store.ErrNonceUnknown)
	wantErr(t, "unknown", s.ConsumeNonce(ctx, random(t, 32), node, t0), store.ErrNonceUnknown)
	wantErr(t, "short", s.ConsumeNonce(ctx, []byte{1}, node, t0), store.ErrNonceUnknown)
	must(t, s.ConsumeNonce(ctx, v, node, t0.Add(59*time.Second)))
	wantErr(t, "replay", s.ConsumeNonce(ctx, v, node, t0), store.ErrNonceUsed)

	e := random(t, 16)
	must(t, s.IssueNonce(ctx, store.Nonce{Value: e, NodeID: node, Expires: t0.Add(time.Second)}))
	wantErr(t, "at expiry", s.ConsumeNonce(ctx, e, node, t0.Add(time.Second)), store.ErrNonceExpired)
	wantErr(t, "after expiry", s.ConsumeNonce(ctx, e, node, t0.Add(time.Hour)), store.ErrNonceExpired)
	must(t, s.ConsumeNonce(ctx, e, node, t0))
}

// testNoncesPerNode: issuing past DefaultMaxNoncesPerNode for one node drops its
// oldest nonces; the newest and other nodes' nonces stay usable.
func testNoncesPerNode(t *testing.T, s store.Store) {
	ctx := context.Background()
	other := random(t, 32)
	must(t, s.IssueNonce(ctx, store.Nonce{Value: other, NodeID: "sha256:bystander", Expires: t0.Add(time.Minute)}))
	const extra = 5
	var vs [][]byte
	for i := range store.DefaultMaxNoncesPerNode + extra {
		v := random(t, 32)
		vs = append(vs, v)
		must(t, s.IssueNonce(ctx, store.Nonce{Value: v, NodeID: "sha256:flooded", Expires: t0.Add(time.Minute + time.Duration(i)*time.Millisecond)}))
	}
	for i, v := range vs {
		if i < extra {
			wantErr(t, fmt.Sprintf("dropped nonce %d", i), s.ConsumeNonce(ctx, v, "sha256:flooded", t0), store.ErrNonceUnknown)
		} else {
			must(t, s.ConsumeNonce(ctx, v, "sha256:flooded", t0))
		}
	}
	must(t, s.ConsumeNonce(ctx, other, "sha256:bystander", t0))
}

func testNonceRace(t *testing.T, s store.Store) {
	ctx := context.Background()
	for round := range 5 {
		v := random(t, 32)
		must(t, s.IssueNonce(ctx, store.Nonce{Value: v, NodeID: "sha256:n", Expires: t0.Add(time.Minute)}))
		ok, errs := race(16, func() error { return s.ConsumeNonce(ctx, v, "sha256:n", t0) })
		if ok != 1 {
			t.Fatalf("round %d: %d concurrent consumptions succeeded, want exactly 1", round, ok)
		}
		for _, err := range errs {
			wantErr(t, "losing consumption", err, store.ErrNonceUsed)
		}
	}
}

func testAttestations(t *testing.T, s store.Store) {
	ctx := context.Background()
	n := NewNode(t)
	must(t, s.CreateNode(ctx, n))
	a := store.Attestation{
		ID: "att-1", NodeID: n.ID, Policy: "web@3", Allow: true, Reasons: []string{"all checks passed"},
		SandboxID: "sb1", GuestPublicKey: random(t, 32), Secrets: []string{"db-password", "tls-key"},
		CreatedAt: t0, ReleaseExpires: t0.Add(30 * time.Second),
	}
	rec, err := s.RecordAttestation(ctx, a)
	must(t, err)
	if rec.Kind != store.KindVerdict || rec.Subject != "att-1" || rec.NodeID != n.ID || rec.Seq != 1 || !bytes.Equal(rec.Hash, rec.ComputeHash()) {
		t.Fatalf("verdict audit record = %+v", rec)
	}
	var d map[string]any
	must(t, json.Unmarshal(rec.Details, &d))
	if d["policy"] != "web@3" || d["allow"] != true || d["sandbox_id"] != "sb1" {
		t.Fatalf("verdict audit details = %s", rec.Details)
	}
	head, err := s.AuditHead(ctx)
	must(t, err)
	if head.Seq != 1 || !bytes.Equal(head.Hash, rec.Hash) {
		t.Fatalf("AuditHead = %+v, want the verdict record", head)
	}
	_, err = s.RecordAttestation(ctx, a)
	wantErr(t, "record twice", err, store.ErrConflict)
	b := a
	b.ID, b.NodeID = "att-x", "sha256:ghost"
	_, err = s.RecordAttestation(ctx, b)
	wantErr(t, "unknown node", err, store.ErrNotFound)
	for _, bad := range []func(*store.Attestation){
		func(a *store.Attestation) { a.ID = "" },
		func(a *store.Attestation) { a.NodeID = "" },
		func(a *store.Attestation) { a.Allow = false },              // deny with window
		func(a *store.Attestation) { a.Secrets = nil },              // window without secrets
		func(a *store.Attestation) { a.ReleasedAt = t0 },            // pre-released
		func(a *store.Attestation) { a.Reasons = []string{"\xc3"} }, // not UTF-8
		func(a *store.Attestation) { a.Policy = "p\x00" },           // NUL
		func(a *store.Attestation) { a.Reasons = make([]string, 1+store.MaxReasons) },
	} {
		c := a
		c.ID = "att-bad"
		bad(&c)
		_, err := s.RecordAttestation(ctx, c)
		wantErr(t, "invalid attestation", err, store.ErrInvalid)
	}
	// A failed record writes nothing.
	if h, _ := s.AuditHead(ctx); h.Seq != 1 {
		t.Fatalf("failed RecordAttestation appended audit records: head %d", h.Seq)
	}

	got, err := s.GetAttestation(ctx, "att-1")
	must(t, err)
	if got.Policy != a.Policy || !got.Allow || got.SandboxID != "sb1" || !bytes.Equal(got.GuestPublicKey, a.GuestPublicKey) ||
		len(got.Secrets) != 2 || got.Secrets[1] != "tls-key" || len(got.Reasons) != 1 ||
		!got.CreatedAt.Equal(t0.Truncate(time.Microsecond)) || !got.ReleaseExpires.Equal(a.ReleaseExpires.Truncate(time.Microsecond)) || !got.ReleasedAt.IsZero() {
		t.Fatalf("GetAttestation = %+v", got)
	}
	_, err = s.GetAttestation(ctx, "nope")
	wantErr(t, "get missing", err, store.ErrNotFound)
	node, err := s.GetNode(ctx, n.ID)
	must(t, err)
	if lv := node.LastVerdict; lv == nil || lv.AttestationID != "att-1" || !lv.Allow || lv.Policy != "web@3" || !lv.Time.Equal(t0.Truncate(time.Microsecond)) {
		t.Fatalf("node LastVerdict = %+v", node.LastVerdict)
	}

	// Release windows.
	_, _, err = s.ConsumeRelease(ctx, "att-1", t0.Add(30*time.Second))
	wantErr(t, "release at expiry", err, store.ErrReleaseExpired)
	r, _, err := s.ConsumeRelease(ctx, "att-1", t0.Add(time.Second))
	must(t, err)
	if r.ReleasedAt.IsZero() || len(r.Secrets) != 2 || !bytes.Equal(r.GuestPublicKey, a.GuestPublicKey) {
		t.Fatalf("ConsumeRelease = %+v", r)
	}
	_, _, err = s.ConsumeRelease(ctx, "att-1", t0.Add(time.Second))
	wantErr(t, "release twice", err, store.ErrReleaseUsed)
	_, _, err = s.ConsumeRelease(ctx, "missing", t0)
	wantErr(t, "release missing", err, store.ErrNotFound)

	deny := store.Attestation{ID: "att-2", NodeID: n.ID, Policy: "web@3", Reasons: []string{"kernel digest sha256:aa not allowed"}, CreatedAt: t0.Add(time.Second)}
	_, err = s.RecordAttestation(ctx, deny)
	must(t, err)
	_, _, err = s.ConsumeRelease(ctx, "att-2", t0)
	wantErr(t, "release of deny", err, store.ErrReleaseDenied)
	node, err = s.GetNode(ctx, n.ID)
	must(t, err)
	if node.LastVerdict == nil || node.LastVerdict.AttestationID != "att-2" || node.LastVerdict.Allow {
		t.Fatalf("LastVerdict after deny = %+v", node.LastVerdict)
	}
	// Updating the node keeps its last verdict; the list shows it too.
	node, err = s.UpdateNode(ctx, n.ID, func(n *store.Node) error { n.State = store.NodeRevoked; return nil })
	must(t, err)
	if node.LastVerdict == nil || node.LastVerdict.AttestationID != "att-2" {
		t.Fatalf("UpdateNode returned LastVerdict %+v, want att-2", node.LastVerdict)
	}
	nodes, err := s.ListNodes(ctx)
	must(t, err)
	if len(nodes) != 1 || nodes[0].State != store.NodeRevoked || nodes[0].LastVerdict == nil || nodes[0].LastVerdict.AttestationID != "att-2" {
		t.Fatalf("ListNodes after revoke = %+v", nodes)
	}
	if _, err := store.VerifyAudit(ctx, s, store.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

func testReleaseRace(t *testing.T, s store.Store) {
	ctx := context.Background()
	n := NewNode(t)
	must(t, s.CreateNode(ctx, n))
	_, err := s.RecordAttestation(ctx, store.Attestation{ID: "a", NodeID: n.ID, Allow: true, Secrets: []string{"k"}, GuestPublicKey: random(t, 32), SandboxID: "s", CreatedAt: t0, ReleaseExpires: t0.Add(time.Minute)})
	must(t, err)
	ok, errs := race(16, func() error { _, _, err := s.ConsumeRelease(ctx, "a", t0); return err })
	if ok != 1 {
		t.Fatalf("%d concurrent releases succeeded, want exactly 1", ok)
	}
	for _, err := range errs {
		wantErr(t, "losing release", err, store.ErrReleaseUsed)
	}
	if got := ReleaseRecords(t, s, "a"); got != 1 {
		t.Fatalf("%d release audit records for one release, want 1", got)
	}
}

// ReleaseRecords counts the KindRelease audit records about attestation
// id in a's whole log (for this suite and attestd's release tests).
func ReleaseRecords(t testing.TB, a store.Audit, id string) int {
	t.Helper()
	n := 0
	for after := uint64(0); ; {
		recs, err := a.ReadAudit(context.Background(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Kind == store.KindRelease && r.Subject == id {
				n++
			}
			after = r.Seq
		}
		if len(recs) < 1000 {
			return n
		}
	}
}

// testReleaseAudited: ConsumeRelease marks the window used and appends its
// release audit record in one step; a refused release writes neither, and
// leaves an open window open.
func testReleaseAudited(t *testing.T, s store.Store) {
	ctx := context.Background()
	n := NewNode(t)
	must(t, s.CreateNode(ctx, n))
	a := store.Attestation{ID: "rel-1", NodeID: n.ID, Policy: "p", Allow: true, Secrets: []string{"db-password", "tls-key"}, GuestPublicKey: random(t, 32), SandboxID: "sb-9", CreatedAt: t0, ReleaseExpires: t0.Add(time.Minute)}
	_, err := s.RecordAttestation(ctx, a)
	must(t, err)
	deny := store.Attestation{ID: "rel-deny", NodeID: n.ID, Policy: "p", CreatedAt: t0}
	_, err = s.RecordAttestation(ctx, deny)
	must(t, err)
	head := func() uint64 {
		t.Helper()
		h, err := s.AuditHead(ctx)
		must(t, err)
		return h.Seq
	}
	before := head()

	// Refusals write nothing, and do not close the window.
	for _, c := range []struct {
		id   string
		now  time.Time
		want error
	}{
		{"rel-1", t0.Add(time.Minute), store.ErrReleaseExpired},
		{"rel-1", t0.Add(time.Hour), store.ErrReleaseExpired},
		{"rel-deny", t0, store.ErrReleaseDenied},
		{"nope", t0, store.ErrNotFound},
	} {
		_, rec, err := s.ConsumeRelease(ctx, c.id, c.now)
		wantErr(t, "refused release of "+c.id, err, c.want)
		if rec.Seq != 0 || head() != before {
			t.Fatalf("refused release of %s appended an audit record", c.id)
		}
	}
	_, _, err = s.ConsumeRelease(ctx, "rel-1", time.Time{})
	wantErr(t, "release without a time", err, store.ErrInvalid)
	got, err := s.GetAttestation(ctx, "rel-1")
	must(t, err)
	if !got.ReleasedAt.IsZero() || store.Releasable(got, t0.Add(time.Second)) != nil {
		t.Fatalf("a refused release consumed the window: %+v", got)
	}
	wantErr(t, "Releasable at expiry", store.Releasable(got, t0.Add(time.Minute)), store.ErrReleaseExpired)
	dg, err := s.GetAttestation(ctx, "rel-deny")
	must(t, err)
	wantErr(t, "Releasable of a deny", store.Releasable(dg, t0), store.ErrReleaseDenied)

	// The release and its record, together.
	at := t0.Add(2 * time.Second)
	r, rec, err := s.ConsumeRelease(ctx, "rel-1", at)
	must(t, err)
	if !r.ReleasedAt.Equal(at.Truncate(time.Microsecond)) || r.SandboxID != "sb-9" || len(r.Secrets) != 2 {
		t.Fatalf("ConsumeRelease = %+v", r)
	}
	if rec.Seq != before+1 || rec.Kind != store.KindRelease || rec.Subject != "rel-1" || rec.NodeID != n.ID ||
		!rec.Time.Equal(at.Truncate(time.Microsecond)) || !bytes.Equal(rec.Hash, rec.ComputeHash()) {
		t.Fatalf("release audit record = %+v", rec)
	}
	var d struct {
		Attestation string   `json:"attestation"`
		Sandbox     string   `json:"sandbox"`
		Secrets     []string `json:"secrets"`
	}
	must(t, json.Unmarshal(rec.Details, &d))
	if d.Attestation != "rel-1" || d.Sandbox != "sb-9" || strings.Join(d.Secrets, ",") != "db-password,tls-key" {
		t.Fatalf("release audit details = %s", rec.Details)
	}
	if h, err := s.AuditHead(ctx); err != nil || !bytes.Equal(h.Hash, rec.Hash) || !bytes.Equal(rec.Prev, auditHash(t, s, before)) {
		t.Fatalf("AuditHead after release = %+v, %v; want the release record", h, err)
	}
	got, err = s.GetAttestation(ctx, "rel-1")
	must(t, err)
	if !got.ReleasedAt.Equal(r.ReleasedAt) {
		t.Fatalf("stored ReleasedAt %v, want %v", got.ReleasedAt, r.ReleasedAt)
	}
	wantErr(t, "Releasable after release", store.Releasable(got, at), store.ErrReleaseUsed)
	_, rec, err = s.ConsumeRelease(ctx, "rel-1", at)
	wantErr(t, "second release", err, store.ErrReleaseUsed)
	if rec.Seq != 0 || head() != before+1 || ReleaseRecords(t, s, "rel-1") != 1 {
		t.Fatal("a second release wrote an audit record")
	}
	if _, err := store.VerifyAudit(ctx, s, store.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// auditHash returns the hash of audit record seq (which must exist).
func auditHash(t *testing.T, s store.Store, seq uint64) []byte {
	t.Helper()
	recs, err := s.ReadAudit(context.Background(), seq-1, 1)
	must(t, err)
	if len(recs) != 1 {
		t.Fatalf("audit record %d missing", seq)
	}
	return recs[0].Hash
}

func secret(name string, v uint64, ct []byte) store.Secret {
	return store.Secret{SecretMeta: store.SecretMeta{Name: name, Version: v, Size: len(ct) - 28, Description: "d" + name}, Ciphertext: ct}
}

func testSecrets(t *testing.T, s store.Store) {
	ctx := context.Background()
	ct1 := random(t, 60)
	must(t, s.PutSecret(ctx, secret("db", 1, ct1), 0))
	wantErr(t, "create twice", s.PutSecret(ctx, secret("db", 1, ct1), 0), store.ErrConflict)
	wantErr(t, "version skip", s.PutSecret(ctx, secret("db", 3, ct1), 1), store.ErrInvalid)
	wantErr(t, "no ciphertext", s.PutSecret(ctx, secret("x", 1, nil), 0), store.ErrInvalid)
	wantErr(t, "huge", s.PutSecret(ctx, secret("x", 1, make([]byte, store.MaxCiphertext+1)), 0), store.ErrInvalid)
	wantErr(t, "no name", s.PutSecret(ctx, secret("", 1, ct1), 0), store.ErrInvalid)
	got, err := s.GetSecret(ctx, "db")
	must(t, err)
	if got.Version != 1 || !bytes.Equal(got.Ciphertext, ct1) || got.Size != 32 || got.Description != "ddb" || got.CreatedAt.IsZero() || got.UpdatedAt.IsZero() {
		t.Fatalf("GetSecret = %+v", got)
	}
	created := got.CreatedAt
	ct2 := random(t, 70)
	s2 := secret("db", 2, ct2)
	s2.UpdatedAt = created.Add(time.Hour)
	must(t, s.PutSecret(ctx, s2, 1))
	wantErr(t, "stale writer", s.PutSecret(ctx, secret("db", 2, ct1), 1), store.ErrConflict)
	got, err = s.GetSecret(ctx, "db")
	must(t, err)
	if got.Version != 2 || !bytes.Equal(got.Ciphertext, ct2) || !got.CreatedAt.Equal(created) || !got.UpdatedAt.Equal(created.Add(time.Hour)) {
		t.Fatalf("after update: %+v (created %v)", got.SecretMeta, created)
	}
	must(t, s.PutSecret(ctx, secret("api", 1, random(t, 40)), 0))
	list, err := s.ListSecrets(ctx)
	must(t, err)
	if len(list) != 2 || list[0].Name != "api" || list[1].Name != "db" || list[1].Version != 2 {
		t.Fatalf("ListSecrets = %+v", list)
	}
	must(t, s.DeleteSecret(ctx, "db"))
	wantErr(t, "delete twice", s.DeleteSecret(ctx, "db"), store.ErrNotFound)
	_, err = s.GetSecret(ctx, "db")
	wantErr(t, "get deleted", err, store.ErrNotFound)
}

func testSecretRace(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, s.PutSecret(ctx, secret("k", 1, random(t, 40)), 0))
	ok, errs := race(10, func() error { return s.PutSecret(ctx, secret("k", 2, random(t, 40)), 1) })
	if ok != 1 {
		t.Fatalf("%d concurrent version-2 writes succeeded, want exactly 1", ok)
	}
	for _, err := range errs {
		wantErr(t, "losing writer", err, store.ErrConflict)
	}
}

func testAudit(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, err := s.AuditHead(ctx)
	wantErr(t, "empty head", err, store.ErrNotFound)
	res, err := store.VerifyAudit(ctx, s, store.VerifyOptions{})
	must(t, err)
	if res.Records != 0 {
		t.Fatalf("empty log verified %d records", res.Records)
	}
	for _, bad := range []store.AuditEntry{
		{Kind: "bogus", Details: json.RawMessage(`{}`)},
		{Kind: store.KindAdmin, Details: json.RawMessage(`[1]`)},
		{Kind: store.KindAdmin, Details: json.RawMessage(`{"a":`)},
		{Kind: store.KindAdmin, Subject: "bad\xff utf-8"},
		{Kind: store.KindAdmin, NodeID: "nul\x00"},
		{Kind: store.KindAdmin, Details: json.RawMessage(`{"a":"` + string(bytes.Repeat([]byte("x"), store.MaxAuditDetails)) + `"}`)},
	} {
		_, err := s.AppendAudit(ctx, bad)
		wantErr(t, "bad entry", err, store.ErrInvalid)
	}
	var recs []store.AuditRecord
	for i := range 5 {
		// Details with whitespace and HTML characters must be kept byte for byte.
		r, err := s.AppendAudit(ctx, store.AuditEntry{Time: t0.Add(time.Duration(i) * time.Second), Kind: store.KindAdmin, NodeID: "", Subject: fmt.Sprintf("secret-%d", i), Details: json.RawMessage(fmt.Sprintf(`{ "op": "put", "n": %d, "note": "<a&b>" }`, i))})
		must(t, err)
		recs = append(recs, r)
	}
	r, err := s.AppendAudit(ctx, store.AuditEntry{Kind: store.KindEnroll, NodeID: "sha256:n"})
	must(t, err)
	if r.Time.IsZero() || string(r.Details) != "{}" {
		t.Fatalf("defaults not applied: %+v", r)
	}
	recs = append(recs, r)
	for i, r := range recs {
		if r.Seq != uint64(i+1) || !bytes.Equal(r.Hash, r.ComputeHash()) {
			t.Fatalf("record %d: seq %d, hash ok %v", i, r.Seq, bytes.Equal(r.Hash, r.ComputeHash()))
		}
		if i > 0 && !bytes.Equal(r.Prev, recs[i-1].Hash) {
			t.Fatalf("record %d does not chain to %d", i+1, i)
		}
	}
	read, err := s.ReadAudit(ctx, 2, 2)
	must(t, err)
	if len(read) != 2 || read[0].Seq != 3 || read[1].Seq != 4 || !bytes.Equal(read[0].Details, recs[2].Details) ||
		!read[0].Time.Equal(recs[2].Time) || !bytes.Equal(read[1].Hash, recs[3].Hash) || read[0].Subject != "secret-2" {
		t.Fatalf("ReadAudit(2,2) = %+v", read)
	}
	if string(read[0].Details) != `{ "op": "put", "n": 2, "note": "<a&b>" }` {
		t.Fatalf("details changed in storage: %s", read[0].Details)
	}
	_, err = s.ReadAudit(ctx, 0, 0)
	wantErr(t, "limit 0", err, store.ErrInvalid)
	_, err = s.ReadAudit(ctx, 0, 1001)
	wantErr(t, "limit 1001", err, store.ErrInvalid)
	res, err = store.VerifyAudit(ctx, s, store.VerifyOptions{Trusted: []store.Checkpoint{{Seq: 3, Hash: recs[2].Hash}}})
	must(t, err)
	if res.Records != 6 || res.Head.Seq != 6 || !bytes.Equal(res.Head.Hash, r.Hash) {
		t.Fatalf("VerifyAudit = %+v", res)
	}
	_, err = store.VerifyAudit(ctx, s, store.VerifyOptions{Trusted: []store.Checkpoint{{Seq: 3, Hash: recs[1].Hash}}})
	wantErr(t, "wrong checkpoint", err, store.ErrAuditChain)
	_, err = store.VerifyAudit(ctx, s, store.VerifyOptions{Trusted: []store.Checkpoint{{Seq: 9, Hash: recs[1].Hash}}})
	wantErr(t, "checkpoint beyond end (truncation)", err, store.ErrAuditChain)
}

func testAuditConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	n := NewNode(t)
	must(t, s.CreateNode(ctx, n))
	// Verification running during appends must not report a false break.
	stop := make(chan struct{})
	verr := make(chan error, 1)
	go func() {
		defer close(verr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := store.VerifyAudit(ctx, s, store.VerifyOptions{}); err != nil {
				verr <- err
				return
			}
		}
	}()
	var i atomic.Int32
	ok, errs := race(24, func() error {
		k := i.Add(1)
		if k%2 == 0 {
			_, err := s.RecordAttestation(ctx, store.Attestation{ID: fmt.Sprintf("a%d", k), NodeID: n.ID, Policy: "p", CreatedAt: t0})
			return err
		}
		_, err := s.AppendAudit(ctx, store.AuditEntry{Kind: store.KindRelease, Subject: fmt.Sprint(k)})
		return err
	})
	close(stop)
	if err := <-verr; err != nil {
		t.Fatalf("VerifyAudit during appends: %v", err)
	}
	if ok != 24 {
		t.Fatalf("%d of 24 concurrent appends failed: %v", 24-ok, errs)
	}
	res, err := store.VerifyAudit(ctx, s, store.VerifyOptions{})
	must(t, err)
	if res.Records != 24 {
		t.Fatalf("chain has %d records, want 24", res.Records)
	}
}

func testPurge(t *testing.T, s store.Store) {
	ctx := context.Background()
	old, used, fresh := random(t, 32), random(t, 32), random(t, 32)
	must(t, s.IssueNonce(ctx, store.Nonce{Value: old, NodeID: "n", Expires: t0}))
	must(t, s.IssueNonce(ctx, store.Nonce{Value: used, NodeID: "n", Expires: t0.Add(time.Hour)}))
	must(t, s.IssueNonce(ctx, store.Nonce{Value: fresh, NodeID: "n", Expires: t0.Add(time.Hour)}))
	must(t, s.ConsumeNonce(ctx, used, "n", t0.Add(-time.Second)))
	secret := random(t, 32)
	nd := enrolled(t, s, secret, t0)
	keep := enrolled(t, s, secret, t0.Add(time.Hour))
	n, err := s.PurgeExpired(ctx, t0.Add(time.Second))
	must(t, err)
	if n != 2 {
		t.Fatalf("PurgeExpired removed %d, want 2 (one nonce, one challenge)", n)
	}
	wantErr(t, "purged nonce", s.ConsumeNonce(ctx, old, "n", t0.Add(-time.Hour)), store.ErrNonceUnknown)
	wantErr(t, "used nonce kept", s.ConsumeNonce(ctx, used, "n", t0), store.ErrNonceUsed)
	must(t, s.ConsumeNonce(ctx, fresh, "n", t0))
	got, err := s.GetNode(ctx, nd.ID)
	must(t, err)
	if got.Challenge != nil {
		t.Fatal("expired challenge not purged")
	}
	got, err = s.GetNode(ctx, keep.ID)
	must(t, err)
	if got.Challenge == nil {
		t.Fatal("live challenge purged")
	}
}

func testClosed(t *testing.T, s store.Store) {
	must(t, s.Close())
	must(t, s.Close())
	ctx := context.Background()
	_, err := s.AppendAudit(ctx, store.AuditEntry{Kind: store.KindAdmin})
	wantErr(t, "append after close", err, store.ErrClosed)
	_, err = s.GetNode(ctx, "x")
	wantErr(t, "get after close", err, store.ErrClosed)
	_, err = s.ReadLaunchPrefix(ctx, "x", 0, "")
	wantErr(t, "read launch prefix after close", err, store.ErrClosed)
}

// Replicas checks that several stores over one shared database (attestd
// replicas) consume each nonce and release window once and keep one linear
// audit chain. reps must share their database and be otherwise empty.
func Replicas(t *testing.T, reps []store.Store) {
	ctx := context.Background()
	pick := func(i int) store.Store { return reps[i%len(reps)] }
	n := NewNode(t)
	must(t, reps[0].CreateNode(ctx, n))
	for round := range 5 {
		v := random(t, 32)
		must(t, pick(round).IssueNonce(ctx, store.Nonce{Value: v, NodeID: n.ID, Expires: t0.Add(time.Minute)}))
		var i atomic.Int32
		ok, errs := race(12, func() error { return pick(int(i.Add(1))).ConsumeNonce(ctx, v, n.ID, t0) })
		if ok != 1 {
			t.Fatalf("round %d: %d replicas consumed one nonce, want exactly 1 (%v)", round, ok, errs)
		}
		id := fmt.Sprintf("att-%d", round)
		_, err := pick(round+1).RecordAttestation(ctx, store.Attestation{ID: id, NodeID: n.ID, Allow: true, Secrets: []string{"k"}, GuestPublicKey: random(t, 32), SandboxID: "s", CreatedAt: t0, ReleaseExpires: t0.Add(time.Minute)})
		must(t, err)
		ok, errs = race(12, func() error { _, _, err := pick(int(i.Add(1))).ConsumeRelease(ctx, id, t0); return err })
		if ok != 1 {
			t.Fatalf("round %d: %d replicas consumed one release window, want exactly 1 (%v)", round, ok, errs)
		}
	}
	var i atomic.Int32
	ok, errs := race(30, func() error {
		_, err := pick(int(i.Add(1))).AppendAudit(ctx, store.AuditEntry{Kind: store.KindRelease, NodeID: n.ID})
		return err
	})
	if ok != 30 {
		t.Fatalf("%d concurrent appends failed: %v", 30-ok, errs)
	}
	for _, s := range reps {
		res, err := store.VerifyAudit(ctx, s, store.VerifyOptions{})
		must(t, err)
		if res.Records != 40 { // 5 verdicts, 5 releases, 30 appends
			t.Fatalf("chain has %d records, want 40", res.Records)
		}
	}
}

func testVaultCheck(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, err := s.VaultCheck(ctx)
	wantErr(t, "no check yet", err, store.ErrNotFound)
	wantErr(t, "empty check", s.PutVaultCheck(ctx, nil), store.ErrInvalid)
	wantErr(t, "huge check", s.PutVaultCheck(ctx, make([]byte, store.MaxVaultCheck+1)), store.ErrInvalid)
	c1 := random(t, 60)
	must(t, s.PutVaultCheck(ctx, c1))
	wantErr(t, "second check", s.PutVaultCheck(ctx, random(t, 60)), store.ErrConflict)
	got, err := s.VaultCheck(ctx)
	must(t, err)
	if !bytes.Equal(got, c1) {
		t.Fatalf("VaultCheck = %x, want the first value %x", got, c1)
	}
}

func testJoins(t *testing.T, s store.Store) {
	ctx := context.Background()
	j := store.Join{ID: "b1", Node: "replica-2", PublicKey: random(t, 32), State: store.JoinApproved, Wrapped: []byte("ignored")}
	must(t, s.CreateJoin(ctx, j))
	wantErr(t, "create twice", s.CreateJoin(ctx, j), store.ErrConflict)
	for _, bad := range []store.Join{{Node: "n", PublicKey: []byte{1}}, {ID: "x", PublicKey: []byte{1}}, {ID: "x", Node: "n"},
		{ID: "x", Node: "n\x00", PublicKey: []byte{1}}, {ID: "x", Node: "n", PublicKey: make([]byte, store.MaxBlob+1)}} {
		wantErr(t, fmt.Sprintf("create %+v", bad), s.CreateJoin(ctx, bad), store.ErrInvalid)
	}
	got, err := s.GetJoin(ctx, "b1")
	must(t, err)
	if got.State != store.JoinPending || got.Wrapped != nil || got.ApprovedBy != "" || got.Node != "replica-2" || !bytes.Equal(got.PublicKey, j.PublicKey) || got.CreatedAt.IsZero() {
		t.Fatalf("GetJoin = %+v, want it pending with no wrapped key", got)
	}
	_, err = s.GetJoin(ctx, "nope")
	wantErr(t, "get unknown", err, store.ErrNotFound)
	must(t, s.CreateJoin(ctx, store.Join{ID: "a2", Node: "replica-3", PublicKey: random(t, 32)}))
	list, err := s.ListJoins(ctx)
	must(t, err)
	if len(list) != 2 || list[0].ID != "a2" || list[1].ID != "b1" {
		t.Fatalf("ListJoins = %+v", list)
	}
	_, err = s.ApproveJoin(ctx, "b1", nil, "alice")
	wantErr(t, "approve without a key", err, store.ErrInvalid)
	_, err = s.ApproveJoin(ctx, "b1", []byte("w"), "")
	wantErr(t, "approve without an approver", err, store.ErrInvalid)
	_, err = s.ApproveJoin(ctx, "nope", []byte("w"), "alice")
	wantErr(t, "approve unknown", err, store.ErrNotFound)
	wrapped := random(t, 80)
	a, err := s.ApproveJoin(ctx, "b1", wrapped, "alice")
	must(t, err)
	if a.State != store.JoinApproved || !bytes.Equal(a.Wrapped, wrapped) || a.ApprovedBy != "alice" {
		t.Fatalf("ApproveJoin = %+v", a)
	}
	_, err = s.ApproveJoin(ctx, "b1", random(t, 80), "mallory")
	wantErr(t, "approve twice", err, store.ErrConflict)
	got, err = s.GetJoin(ctx, "b1")
	must(t, err)
	if got.State != store.JoinApproved || !bytes.Equal(got.Wrapped, wrapped) || got.ApprovedBy != "alice" {
		t.Fatalf("after approval: %+v", got)
	}
	must(t, s.DeleteJoin(ctx, "b1"))
	wantErr(t, "delete twice", s.DeleteJoin(ctx, "b1"), store.ErrNotFound)
	_, err = s.GetJoin(ctx, "b1")
	wantErr(t, "get deleted", err, store.ErrNotFound)
}

func testJoinApproveRace(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, s.CreateJoin(ctx, store.Join{ID: "r", Node: "n", PublicKey: random(t, 32)}))
	ok, errs := race(10, func() error { _, err := s.ApproveJoin(ctx, "r", random(t, 48), "alice"); return err })
	if ok != 1 {
		t.Fatalf("%d concurrent approvals succeeded, want exactly 1", ok)
	}
	for _, err := range errs {
		wantErr(t, "losing approval", err, store.ErrConflict)
	}
}
