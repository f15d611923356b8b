package attestd

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/measure"
	dto "github.com/prometheus/client_model/go"
)

// listBarrier is the real store, except that once armed, the first
// `parties` listings of every kept sandbox (Rejudge's) each wait, after
// reading, until all of them have read: every judge sees the sandboxes
// allowed before any revokes one — the interleaving that made duplicate
// revocations, produced without timing.
type listBarrier struct {
	store.Store
	mu      sync.Mutex
	parties int           // listings still to join; 0: not armed
	all     chan struct{} // closed when the last has joined
}

func (b *listBarrier) arm(parties int) {
	b.mu.Lock()
	b.parties, b.all = parties, make(chan struct{})
	b.mu.Unlock()
}

func (b *listBarrier) ListSandboxStates(ctx context.Context, node string) ([]store.SandboxState, error) {
	sts, err := b.Store.ListSandboxStates(ctx, node)
	b.mu.Lock()
	if node != "" || b.parties == 0 {
		b.mu.Unlock()
		return sts, err
	}
	b.parties--
	all := b.all
	if b.parties == 0 {
		close(all)
	}
	b.mu.Unlock()
	select {
	case <-all:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return sts, err
}

// TestPolicyChangeRevokesOnce: a policy change that revokes kept
// sandboxes makes one revocation decision per sandbox, however many
// paths judge them again at once — 'attestd ctl policies reload' judges
// them itself and, through the watcher's OnLoad, again in the background
// (attestd serve's rejudge loop), and the watcher may notice the same
// change by itself first. Before, each path sent its own revocation, and
// the host got two "revoked" decisions for one sandbox.
func TestPolicyChangeRevokesOnce(t *testing.T) {
	otherKernel := measure.DigestBytes(measure.SHA256, []byte("another kernel"))
	for _, tc := range []struct {
		name string
		// change applies the policy change; the watcher's OnLoad runs
		// `loads` times.
		change func(t *testing.T, ctx context.Context, e *env)
		loads  int
	}{
		{"reload RPC and its OnLoad", func(t *testing.T, ctx context.Context, e *env) {
			e.reloadPolicy(t, ctx, otherKernel)
		}, 1},
		{"watcher check then reload RPC", func(t *testing.T, ctx context.Context, e *env) {
			if err := os.WriteFile(filepath.Join(e.policyDir, "test.yaml"), []byte(testPolicyYAML(testPolicyName, otherKernel)), 0o600); err != nil {
				t.Fatal(err)
			}
			if !e.watcher.Check() {
				t.Fatal("the watcher did not notice the change")
			}
			e.reloadPolicy(t, ctx, otherKernel)
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			h := newHost(t, "sim")
			// attestd serve's wiring: OnLoad signals a loop that judges
			// the kept sandboxes again (attestdcmd's rejudgeLoop).
			loaded := make(chan struct{}, 8)
			barrier := &listBarrier{}
			e := newEnv(t, envOptions{ekAllow: []string{h.nodeID},
				wrapStore:    func(s store.Store) store.Store { barrier.Store = s; return barrier },
				onPolicyLoad: func() { loaded <- struct{}{} }})
			<-loaded // the first load, before the server existed
			type result struct {
				n   int
				err error
			}
			results := make(chan result, 8)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-loaded:
						n, err := e.srv.Rejudge(ctx)
						results <- result{n, err}
					}
				}
			}()

			h.enroll(ctx, e.client)
			e.putSecrets(t)
			key := newGuestKey(t)
			kept := map[string]bool{}
			for range 2 {
				ev := testEvent(t, testPolicyName, key.PublicKey())
				h.launch(ev)
				nonce, _ := e.prefixChallenge(t, ctx, h.nodeID)
				req := h.attestRequest(ctx, nonce, ev.SandboxID)
				req.ReattestIntervalSeconds = 60
				wantAllow(t)(e.client.Attest(ctx, req))
				kept[ev.SandboxID] = true
			}

			// Two judges, each past its listing before either revokes.
			barrier.arm(2)
			tc.change(t, ctx, e)
			revoked := 0
			for range tc.loads {
				r := <-results
				if r.err != nil {
					t.Fatalf("Rejudge: %v", r.err)
				}
				revoked += r.n
			}

			ds, err := e.st.ListDecisions(ctx, h.nodeID, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			per := map[string]int{}
			for _, d := range ds {
				if d.Kind != store.DecisionRevoke {
					t.Fatalf("decision %+v", d)
				}
				per[d.SandboxID]++
			}
			for id := range kept {
				if per[id] != 1 {
					t.Errorf("sandbox %s: %d revocations, want 1 (all: %d decisions)", id, per[id], len(ds))
				}
			}
			if len(ds) != len(kept) {
				t.Errorf("%d decisions for %d sandboxes", len(ds), len(kept))
			}
			var m dto.Metric
			if err := e.srv.metrics.Decisions.WithLabelValues(string(store.DecisionRevoke)).Write(&m); err != nil {
				t.Fatal(err)
			}
			if got := m.GetCounter().GetValue(); got != float64(len(kept)) {
				t.Errorf("bulwark_attestd_decisions_total{kind=revoke} = %v, want %d", got, len(kept))
			}
			if revoked > len(kept) {
				t.Errorf("the background judge reports %d revoked, of %d sandboxes", revoked, len(kept))
			}
			for id, s := range e.sandboxes(t, ctx) {
				if s.GetVerdict() != "revoked" {
					t.Errorf("sandbox %s: %s, want revoked", id, s.GetVerdict())
				}
			}

			// The host is sent each revocation once.
			w := e.watch(t, ctx, h, 0)
			got := map[string]bool{}
			for range len(kept) {
				d := next(t, w)
				if d.GetKind() != bulwarkv1.NodeDecision_KIND_REVOKE || got[d.GetSandboxId()] {
					t.Fatalf("decision %v (sent before: %v)", d, got)
				}
				got[d.GetSandboxId()] = true
			}
		})
	}
}
