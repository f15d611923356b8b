package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
)

// testSandboxes: kept sandbox states are written whole, read back equal,
// listed per node and in all, forgotten with their node; staleness is a
// reading of the state, never stored.
func testSandboxes(t *testing.T, s store.Store) {
	ctx := context.Background()
	n1, n2 := NewNode(t), NewNode(t)
	must(t, s.CreateNode(ctx, n1))
	must(t, s.CreateNode(ctx, n2))
	st := store.SandboxState{NodeID: n1.ID, SandboxID: "sb-1", Policy: "web", JudgedBy: "web@sha256:ab", Verdict: store.SandboxAllow,
		Reasons: []string{"ok"}, VerdictAt: t0, Interval: 2 * time.Second, GuestPublicKey: random(t, 32), EventDigest: random(t, 32),
		ResetCount: 3, RestartCount: 1, Evidence: []byte(`{"e":1}`), Secrets: []store.SandboxSecret{{Name: "db", Version: 2}},
		OnRevoke: "stop", CreatedAt: t0}

	wantErr(t, "put for an unknown node", s.PutSandbox(ctx, store.SandboxState{NodeID: "sha256:none", SandboxID: "x", Verdict: store.SandboxAllow, VerdictAt: t0}), store.ErrNotFound)
	wantErr(t, "put with no verdict", s.PutSandbox(ctx, store.SandboxState{NodeID: n1.ID, SandboxID: "x", VerdictAt: t0}), store.ErrInvalid)
	wantErr(t, "put with a stale verdict", s.PutSandbox(ctx, store.SandboxState{NodeID: n1.ID, SandboxID: "x", Verdict: store.SandboxStale, VerdictAt: t0}), store.ErrInvalid)
	_, err := s.GetSandbox(ctx, n1.ID, "sb-1")
	wantErr(t, "get before put", err, store.ErrNotFound)

	must(t, s.PutSandbox(ctx, st))
	got, err := s.GetSandbox(ctx, n1.ID, "sb-1")
	must(t, err)
	// Times come back normalised (microseconds, UTC).
	st.VerdictAt, st.CreatedAt = st.VerdictAt.Truncate(time.Microsecond), st.CreatedAt.Truncate(time.Microsecond)
	if fmt.Sprint(got) != fmt.Sprint(st) {
		t.Fatalf("read back\n%+v\nwant\n%+v", got, st)
	}
	st2 := st
	st2.SandboxID, st2.Verdict, st2.VerdictAt = "sb-2", store.SandboxDeny, t0.Add(time.Second)
	must(t, s.PutSandbox(ctx, st2))
	st3 := st
	st3.NodeID = n2.ID
	must(t, s.PutSandbox(ctx, st3))
	// A new verdict replaces the state.
	st.Verdict, st.VerdictAt, st.Reasons = store.SandboxRevoked, t0.Add(time.Minute), []string{"node revoked"}
	must(t, s.PutSandbox(ctx, st))
	got, err = s.GetSandbox(ctx, n1.ID, "sb-1")
	must(t, err)
	if got.Verdict != store.SandboxRevoked || !got.VerdictAt.Equal(st.VerdictAt.Truncate(time.Microsecond)) || len(got.Reasons) != 1 {
		t.Fatalf("after a new verdict: %+v", got)
	}

	l1, err := s.ListSandboxStates(ctx, n1.ID)
	must(t, err)
	all, err := s.ListSandboxStates(ctx, "")
	must(t, err)
	if len(l1) != 2 || l1[0].SandboxID != "sb-1" || l1[1].SandboxID != "sb-2" || len(all) != 3 {
		t.Fatalf("listed %d of node 1 (%v), %d in all; want 2, 3", len(l1), l1, len(all))
	}

	must(t, s.DeleteSandbox(ctx, n1.ID, "sb-2"))
	wantErr(t, "delete twice", s.DeleteSandbox(ctx, n1.ID, "sb-2"), store.ErrNotFound)
	must(t, s.DeleteNode(ctx, n1.ID))
	_, err = s.GetSandbox(ctx, n1.ID, "sb-1")
	wantErr(t, "a deleted node's sandbox", err, store.ErrNotFound)
	all, err = s.ListSandboxStates(ctx, "")
	must(t, err)
	if len(all) != 1 || all[0].NodeID != n2.ID {
		t.Fatalf("after deleting node 1: %v", all)
	}

	// Staleness: an allow older than twice the interval.
	a := store.SandboxState{Verdict: store.SandboxAllow, VerdictAt: t0, Interval: time.Second}
	for _, tc := range []struct {
		at   time.Duration
		want store.SandboxVerdict
	}{{0, store.SandboxAllow}, {2 * time.Second, store.SandboxAllow}, {2*time.Second + 1, store.SandboxStale}} {
		if got := a.Effective(t0.Add(tc.at)); got != tc.want {
			t.Errorf("allow at +%v: %s, want %s", tc.at, got, tc.want)
		}
	}
	d := store.SandboxState{Verdict: store.SandboxDeny, VerdictAt: t0, Interval: time.Second}
	if got := d.Effective(t0.Add(time.Hour)); got != store.SandboxDeny {
		t.Errorf("an old deny: %s", got)
	}
	// An ended sandbox is stored as ended, and never turns stale.
	st3.Verdict, st3.VerdictAt = store.SandboxEnded, t0.Add(time.Hour)
	must(t, s.PutSandbox(ctx, st3))
	got, err = s.GetSandbox(ctx, n2.ID, st3.SandboxID)
	must(t, err)
	if e := got.Effective(t0.Add(1000 * time.Hour)); got.Verdict != store.SandboxEnded || e != store.SandboxEnded {
		t.Errorf("an ended sandbox: stored %s, effective %s", got.Verdict, e)
	}
}

// testDecisions: each node's decisions are numbered from 1 without gaps,
// even when appended concurrently, and listed from any point.
func testDecisions(t *testing.T, s store.Store) {
	ctx := context.Background()
	n1, n2 := NewNode(t), NewNode(t)
	must(t, s.CreateNode(ctx, n1))
	must(t, s.CreateNode(ctx, n2))
	_, err := s.AppendDecision(ctx, store.Decision{NodeID: "sha256:none", SandboxID: "a", Kind: store.DecisionRevoke})
	wantErr(t, "append for an unknown node", err, store.ErrNotFound)
	_, err = s.AppendDecision(ctx, store.Decision{NodeID: n1.ID, SandboxID: "a", Kind: "explode"})
	wantErr(t, "append of an unknown kind", err, store.ErrInvalid)
	_, err = s.ListDecisions(ctx, n1.ID, 0, 0)
	wantErr(t, "list with limit 0", err, store.ErrInvalid)

	d1, err := s.AppendDecision(ctx, store.Decision{NodeID: n1.ID, SandboxID: "a", Kind: store.DecisionRevoke, Action: "stop",
		Reasons: []string{"node revoked"}, CreatedAt: t0})
	must(t, err)
	d2, err := s.AppendDecision(ctx, store.Decision{NodeID: n1.ID, SandboxID: "a", Kind: store.DecisionRotate,
		Secrets: []store.DecisionSecret{{Name: "db", Version: 3, Wrapped: random(t, 80)}}, CreatedAt: t0})
	must(t, err)
	o1, err := s.AppendDecision(ctx, store.Decision{NodeID: n2.ID, SandboxID: "b", Kind: store.DecisionRevoke, CreatedAt: t0})
	must(t, err)
	if d1.Seq != 1 || d2.Seq != 2 || o1.Seq != 1 {
		t.Fatalf("seqs %d %d (node 1), %d (node 2); want 1 2, 1", d1.Seq, d2.Seq, o1.Seq)
	}
	got, err := s.ListDecisions(ctx, n1.ID, 0, 10)
	must(t, err)
	if len(got) != 2 || fmt.Sprint(got[0]) != fmt.Sprint(d1) || fmt.Sprint(got[1]) != fmt.Sprint(d2) {
		t.Fatalf("listed\n%+v\nwant\n%+v\n%+v", got, d1, d2)
	}
	got, err = s.ListDecisions(ctx, n1.ID, 1, 10)
	must(t, err)
	if len(got) != 1 || got[0].Seq != 2 {
		t.Fatalf("after 1: %+v", got)
	}
	got, err = s.ListDecisions(ctx, n1.ID, 2, 10)
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("after 2: %+v", got)
	}

	// Concurrent appends: every seq once.
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.AppendDecision(ctx, store.Decision{NodeID: n2.ID, SandboxID: "b", Kind: store.DecisionRevoke})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	got, err = s.ListDecisions(ctx, n2.ID, 0, 5)
	must(t, err)
	if len(got) != 5 {
		t.Fatalf("limit 5: %d", len(got))
	}
	got, err = s.ListDecisions(ctx, n2.ID, 0, 100)
	must(t, err)
	for i, d := range got {
		if d.Seq != uint64(i+1) {
			t.Fatalf("decision %d has seq %d", i, d.Seq)
		}
	}
	if len(got) != n+1 {
		t.Fatalf("%d decisions, want %d", len(got), n+1)
	}
	must(t, s.DeleteNode(ctx, n1.ID))
	got, err = s.ListDecisions(ctx, n1.ID, 0, 10)
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("a deleted node's decisions: %v", got)
	}
}

// testDecisionKeys: a keyed decision is stored once per node, however many
// append it at once (a policy reload racing the policy watcher, two
// replicas): the others get the stored one back, with ErrConflict. Other
// keys, keyless decisions and other nodes are not affected; a deleted
// node's keys go with it.
func testDecisionKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	n1, n2 := NewNode(t), NewNode(t)
	must(t, s.CreateNode(ctx, n1))
	must(t, s.CreateNode(ctx, n2))
	key := store.RevokeKey("a", []byte{1, 2, 3})
	_, err := s.AppendDecision(ctx, store.Decision{NodeID: n1.ID, SandboxID: "a", Kind: store.DecisionRevoke, Key: strings.Repeat("k", store.MaxDecisionKey+1)})
	wantErr(t, "append with an oversized key", err, store.ErrInvalid)

	const n = 16
	type res struct {
		d   store.Decision
		err error
	}
	var wg sync.WaitGroup
	out := make(chan res, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := s.AppendDecision(ctx, store.Decision{NodeID: n1.ID, SandboxID: "a", Kind: store.DecisionRevoke, Action: "stop",
				Reasons: []string{fmt.Sprint("writer ", i)}, Key: key, CreatedAt: t0})
			out <- res{d, err}
		}()
	}
	wg.Wait()
	close(out)
	var stored []store.Decision
	conflicts := 0
	for r := range out {
		switch {
		case r.err == nil:
			stored = append(stored, r.d)
		case errors.Is(r.err, store.ErrConflict):
			conflicts++
		default:
			t.Fatalf("append: %v", r.err)
		}
	}
	if len(stored) != 1 || conflicts != n-1 {
		t.Fatalf("%d stored, %d conflicts; want 1, %d", len(stored), conflicts, n-1)
	}
	got, err := s.ListDecisions(ctx, n1.ID, 0, 100)
	must(t, err)
	if len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(stored[0]) || got[0].Key != key {
		t.Fatalf("listed %+v, want only %+v", got, stored[0])
	}
	// A later duplicate returns the stored decision, not its own.
	old, err := s.AppendDecision(ctx, store.Decision{NodeID: n1.ID, SandboxID: "a", Kind: store.DecisionRevoke, Reasons: []string{"late"}, Key: key})
	wantErr(t, "a duplicate", err, store.ErrConflict)
	if fmt.Sprint(old) != fmt.Sprint(stored[0]) {
		t.Fatalf("duplicate returned %+v, want the stored %+v", old, stored[0])
	}

	// Other keys, no key, another node: stored as usual, in sequence.
	for i, d := range []store.Decision{
		{NodeID: n1.ID, SandboxID: "a", Kind: store.DecisionRevoke, Key: store.RevokeKey("a", []byte{1, 2, 3}, "db")},
		{NodeID: n1.ID, SandboxID: "a", Kind: store.DecisionRotate},
		{NodeID: n1.ID, SandboxID: "a", Kind: store.DecisionRotate},
		{NodeID: n2.ID, SandboxID: "a", Kind: store.DecisionRevoke, Key: key},
	} {
		got, err := s.AppendDecision(ctx, d)
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if want := []uint64{2, 3, 4, 1}[i]; got.Seq != want {
			t.Fatalf("append %d: seq %d, want %d", i, got.Seq, want)
		}
	}

	// Deleting the node forgets its keys: a node enrolled again under
	// the same id starts afresh.
	must(t, s.DeleteNode(ctx, n1.ID))
	must(t, s.CreateNode(ctx, n1))
	d, err := s.AppendDecision(ctx, store.Decision{NodeID: n1.ID, SandboxID: "a", Kind: store.DecisionRevoke, Key: key})
	if err != nil || d.Seq != 1 {
		t.Fatalf("after the node was deleted and created again: %+v, %v", d, err)
	}
}
