package attestd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestFreeRefusalsAreNotAudited: requests anyone can make from a node's
// public values write nothing to the serialized audit chain; a genuine
// attestation still does.
func TestFreeRefusalsAreNotAudited(t *testing.T) {
	p := newInprocWith(t, nil)
	ctx := context.Background()
	head := func() uint64 {
		t.Helper()
		r, err := p.srv.st.AuditHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return r.Seq
	}
	before := head()
	tp := p.host.TPM
	for range 5 {
		// Enrolling an active node again with its own AK: a new challenge, nothing else.
		if _, err := p.srv.Enroll(ctx, &bulwarkv1.EnrollRequest{EkPublic: tp.EKPublic(), AkPublic: tp.AKPublic()}); err != nil {
			t.Fatal(err)
		}
		// A wrong credential secret.
		_, err := p.srv.ActivateCredential(ctx, &bulwarkv1.ActivateCredentialRequest{NodeId: p.node, Secret: make([]byte, 32)})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("wrong secret: %v", err)
		}
	}
	if got := head(); got != before {
		t.Fatalf("%d audit records written by free requests", got-before)
	}
	if _, err := p.srv.Attest(ctx, p.request(t)); err != nil {
		t.Fatal(err)
	}
	if head() != before+1 {
		t.Fatal("a verdict was not audited")
	}
	// A revoked node's made-up attestation.
	req := p.request(t)
	if _, err := p.srv.st.UpdateNode(ctx, p.node, func(n *store.Node) error { n.State = store.NodeRevoked; return nil }); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := p.srv.Attest(ctx, req); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("revoked node: %v", err)
		}
	}
	if got := head(); got != before+1 {
		t.Fatalf("%d audit records written by a revoked node's requests", got-before-1)
	}
}

// TestEnrollKeepsOnlyCheckedCertificates: an allow-listed EK enrolls
// without a certificate, and junk sent as one is not stored over anything.
func TestEnrollKeepsOnlyCheckedCertificates(t *testing.T) {
	p := newInprocWith(t, nil) // its host is allow-listed
	ctx := context.Background()
	tp := p.host.TPM
	if _, err := p.srv.Enroll(ctx, &bulwarkv1.EnrollRequest{EkPublic: tp.EKPublic(), AkPublic: tp.AKPublic(), EkCertificate: []byte("not a certificate at all")}); err != nil {
		t.Fatal(err)
	}
	n, err := p.srv.st.GetNode(ctx, p.node)
	if err != nil {
		t.Fatal(err)
	}
	if len(n.EKCert) != 0 {
		t.Fatalf("stored an unchecked EK certificate: %q", n.EKCert)
	}
}

// TestStrangersWriteNoAudit: what anyone holding a node's public values
// can send — a junk quote under a nonce from Challenge, with a sandbox id
// of their choosing, or an enrollment of their own AK for a node not yet
// active — writes nothing to the audit chain. A refusal after a verified
// quote, and an activation, each write one record.
func TestStrangersWriteNoAudit(t *testing.T) {
	ctx := context.Background()
	fresh, err := softtpm.New(softtpm.Options{}) // a host not yet enrolled
	if err != nil {
		t.Fatal(err)
	}
	freshEK, err := verify.ParseEKPublic(fresh.EKPublic())
	if err != nil {
		t.Fatal(err)
	}
	freshNode := limits.NodeID(freshEK.Raw)
	p := newInprocWith(t, func(c *Config) { c.EKAllow = append(c.EKAllow, freshNode) })
	head := func() uint64 {
		t.Helper()
		r, err := p.srv.st.AuditHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return r.Seq
	}
	before := head()

	t.Run("junk quote after Challenge", func(t *testing.T) {
		for i := range 20 {
			req := p.request(t)
			req.Signature = bytes.Repeat([]byte{byte(i)}, 64)
			req.SandboxId = fmt.Sprintf("attacker-chosen-%d", i)
			if _, err := p.srv.Attest(ctx, req); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("junk quote: %v", err)
			}
		}
		if got := head(); got != before {
			t.Fatalf("%d audit records written by junk quotes", got-before)
		}
	})

	t.Run("new AK for a node not yet active", func(t *testing.T) {
		stranger, err := softtpm.New(softtpm.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			for _, ak := range [][]byte{fresh.AKPublic(), stranger.AKPublic()} {
				if _, err := p.srv.Enroll(ctx, &bulwarkv1.EnrollRequest{EkPublic: fresh.EKPublic(), AkPublic: ak}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got := head(); got != before {
			t.Fatalf("%d audit records written by enrollments before activation", got-before)
		}
		// The host itself enrolls and activates: one record, naming its AK.
		enr, err := p.srv.Enroll(ctx, &bulwarkv1.EnrollRequest{EkPublic: fresh.EKPublic(), AkPublic: fresh.AKPublic()})
		if err != nil {
			t.Fatal(err)
		}
		secret, err := fresh.ActivateCredential(enr.GetCredentialBlob(), enr.GetEncryptedSecret())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.srv.ActivateCredential(ctx, &bulwarkv1.ActivateCredentialRequest{NodeId: freshNode, Secret: secret}); err != nil {
			t.Fatal(err)
		}
		if got := head(); got != before+1 {
			t.Fatalf("activation wrote %d audit records, want 1", got-before)
		}
		recs, err := p.srv.st.ReadAudit(ctx, before, 10)
		if err != nil || len(recs) != 1 {
			t.Fatalf("ReadAudit: %v %v", recs, err)
		}
		ak, _ := verify.ParseAKPublic(fresh.AKPublic())
		r := recs[0]
		if r.Kind != store.KindEnroll || r.Subject != freshNode || !strings.Contains(string(r.Details), fmt.Sprintf("%x", ak.Name)) ||
			!strings.Contains(string(r.Details), `"ek_trust":"allow-list"`) {
			t.Fatalf("activation record: %s %s %s", r.Kind, r.Subject, r.Details)
		}
		before = head()
	})

	t.Run("refusal after a verified quote", func(t *testing.T) {
		req := p.request(t)
		req.SandboxId = "not-the-last-launch"
		if _, err := p.srv.Attest(ctx, req); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("wrong sandbox: %v", err)
		}
		if got := head(); got != before+1 {
			t.Fatalf("a refusal after a verified quote wrote %d audit records, want 1", got-before)
		}
	})
}

// TestAuditSubjects: subjects outside [A-Za-z0-9._:-] or too long are
// not written.
func TestAuditSubjects(t *testing.T) {
	for _, tc := range []struct {
		subject string
		ok      bool
	}{
		{"sha256:" + strings.Repeat("ab", 32), true},
		{"att-0123456789abcdef0123456789abcdef", true},
		{"db-password", true},
		{"policies", true},
		{"", false},
		{strings.Repeat("a", MaxAuditSubject), true},
		{strings.Repeat("a", MaxAuditSubject+1), false},
		{"two words", false},
		{"line\nbreak", false},
		{`quote"`, false},
		{"caf\u00e9", false},
	} {
		err := validAuditSubject(tc.subject)
		if (err == nil) != tc.ok {
			t.Errorf("%q: %v, want ok=%v", trunc(tc.subject), err, tc.ok)
		}
		if err != nil && !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%q: %v is not store.ErrInvalid", trunc(tc.subject), err)
		}
	}
	p := newInproc(t)
	if err := p.srv.appendAudit(context.Background(), store.AuditEntry{Kind: store.KindAdmin, Subject: "a\x1b[31mb"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("appendAudit with a control character: %v", err)
	}
}
