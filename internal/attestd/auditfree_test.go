package attestd

import (
	"context"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/store"
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
