package attestd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/store"
)

// truncated hides the last n records of an audit log, as an attacker who
// deletes the tail of the log would.
type truncated struct {
	store.Audit
	n uint64
}

func (t truncated) ReadAudit(ctx context.Context, after uint64, limit int) ([]store.AuditRecord, error) {
	head, err := t.Audit.AuditHead(ctx) // the real head
	if err != nil {
		return nil, err
	}
	recs, err := t.Audit.ReadAudit(ctx, after, limit)
	out := recs[:0]
	for _, r := range recs {
		if r.Seq+t.n <= head.Seq {
			out = append(out, r)
		}
	}
	return out, err
}

func (t truncated) AuditHead(ctx context.Context) (store.AuditRecord, error) {
	head, err := t.Audit.AuditHead(ctx)
	if err != nil {
		return head, err
	}
	recs, err := t.Audit.ReadAudit(ctx, head.Seq-t.n-1, 1)
	if err != nil || len(recs) != 1 {
		return store.AuditRecord{}, store.ErrNotFound
	}
	return recs[0], nil
}

func TestAuditCheckpoints(t *testing.T) {
	p := newInproc(t) // the activation: one audit record
	ctx := context.Background()
	if _, err := p.srv.Attest(ctx, p.request(t)); err != nil { // a verdict: a second
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), CheckpointFile)
	cps := NewCheckpoints(path, p.srv.tokens, nil)
	cp, err := cps.Record(ctx, p.srv.st)
	if err != nil || cp.Seq == 0 {
		t.Fatalf("record: %v %v", cp, err)
	}
	if _, err := cps.Record(ctx, p.srv.st); err != nil { // same head: not repeated
		t.Fatal(err)
	}
	trusted, err := cps.Trusted(p.srv.tokens.Public())
	if err != nil || len(trusted) != 1 {
		t.Fatalf("trusted: %v %v", trusted, err)
	}
	if _, err := store.VerifyAudit(ctx, p.srv.st, store.VerifyOptions{Trusted: trusted}); err != nil {
		t.Fatalf("intact log: %v", err)
	}
	// The chain alone does not notice a removed tail; the checkpoint does.
	cut := truncated{Audit: p.srv.st, n: 1}
	if _, err := store.VerifyAudit(ctx, cut, store.VerifyOptions{}); err != nil {
		t.Fatalf("truncated log without checkpoints: %v", err)
	}
	if _, err := store.VerifyAudit(ctx, cut, store.VerifyOptions{Trusted: trusted}); !errors.Is(err, store.ErrAuditChain) {
		t.Fatalf("truncated log with checkpoints: %v", err)
	}
	// An edited checkpoint file is refused.
	b, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(b), `"seq":`, `"seq":1`, 1)), 0o600)
	if _, err := cps.Trusted(p.srv.tokens.Public()); err == nil || !strings.Contains(err.Error(), "signature does not verify") {
		t.Fatalf("edited checkpoint: %v", err)
	}
}

// TestCheckpointsLostAreReported: a checkpoint file removed while attestd
// runs is reported by the Admin VerifyAudit (and keeps being reported), not
// quietly written anew; Record says so once and anchors future records.
func TestCheckpointsLostAreReported(t *testing.T) {
	p := newInproc(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), CheckpointFile)
	cps := NewCheckpoints(path, p.srv.tokens, nil)
	p.srv.cps = cps
	if _, err := cps.Record(ctx, p.srv.st); err != nil {
		t.Fatal(err)
	}
	adm := &adminServer{s: p.srv}
	if r, err := adm.VerifyAudit(ctx, &bulwarkv1.VerifyAuditRequest{}); err != nil || !r.GetOk() {
		t.Fatalf("intact: %v %v", r, err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		r, err := adm.VerifyAudit(ctx, &bulwarkv1.VerifyAuditRequest{})
		if err != nil || r.GetOk() || !strings.Contains(r.GetError(), "disappeared while attestd ran") {
			t.Fatalf("call %d after the file was removed: ok %v error %q (%v)", i+1, r.GetOk(), r.GetError(), err)
		}
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the checkpoint file was not written anew for future records: %v", err)
	}
	if _, err := cps.Record(ctx, p.srv.st); err != nil {
		t.Fatalf("a later record: %v", err)
	}
}
