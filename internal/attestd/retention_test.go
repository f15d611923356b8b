package attestd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/token"
)

// TestRetainerRound: a retention round purges the attestations and audit
// records older than the retention, prunes the checkpoints before its
// seal, and the Admin VerifyAudit still verifies what remains — but not
// under a seal signed with another key.
func TestRetainerRound(t *testing.T) {
	p := newInproc(t) // the activation: record 1
	ctx := context.Background()
	cps := NewCheckpoints(filepath.Join(t.TempDir(), CheckpointFile), p.srv.tokens, p.clock.Now)
	p.srv.cps = cps
	attest := func() string {
		r, err := p.srv.Attest(ctx, p.request(t))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cps.Record(ctx, p.srv.st); err != nil {
			t.Fatal(err)
		}
		return r.GetAttestationId()
	}
	old := []string{attest(), attest(), attest()} // records 2..4
	p.clock.Advance(2 * time.Hour)
	kept := []string{attest(), attest()} // records 5, 6
	adm := &adminServer{s: p.srv}

	r := &Retainer{Store: p.srv.st, Tokens: p.srv.tokens, Checkpoints: cps, Retention: time.Hour, Now: p.clock.Now}
	pu, err := r.Round(ctx)
	if err != nil || pu.Audit != 4 || pu.Attestations != 3 {
		t.Fatalf("round: %+v, %v", pu, err)
	}
	for _, id := range old {
		if _, err := p.srv.st.GetAttestation(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("attestation %s older than the retention: %v", id, err)
		}
	}
	for _, id := range kept {
		if _, err := p.srv.st.GetAttestation(ctx, id); err != nil {
			t.Fatalf("attestation %s within the retention: %v", id, err)
		}
	}
	trusted, err := cps.Trusted(p.srv.tokens.Public())
	if err != nil || len(trusted) != 3 || trusted[0].Seq != 4 {
		t.Fatalf("checkpoints after pruning: %v, %v", trusted, err)
	}
	if v, err := adm.VerifyAudit(ctx, &bulwarkv1.VerifyAuditRequest{}); err != nil || !v.GetOk() || v.GetRecords() != 2 {
		t.Fatalf("VerifyAudit after retention: %v, %v", v, err)
	}
	// Nothing old enough: a round purges nothing.
	if pu, err := r.Round(ctx); err != nil || pu.Audit != 0 {
		t.Fatalf("second round: %+v, %v", pu, err)
	}

	// A seal signed with another key does not vouch for what it purged.
	p.clock.Advance(2 * time.Hour)
	attest()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := token.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&Retainer{Store: p.srv.st, Tokens: other, Retention: time.Hour, Now: p.clock.Now}).Round(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := adm.VerifyAudit(ctx, &bulwarkv1.VerifyAuditRequest{})
	if err != nil || v.GetOk() || !strings.Contains(v.GetError(), "seal does not verify") {
		t.Fatalf("VerifyAudit under a foreign seal: %v, %v", v, err)
	}
}
