package attestd

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/internal/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRevokedEKCannotReenrollReencoded: a revoked host stays revoked. Its
// EK certificate binds only the key, so the same EK sent with another
// encoding (here the noDA attribute bit added) must not enroll as a new
// node; it is refused as not a canonical EK.
func TestRevokedEKCannotReenrollReencoded(t *testing.T) {
	now := time.Now()
	ca, err := softtpm.NewEKCA(now)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	p := newInprocWith(t, func(c *Config) { c.EKRoots = roots })
	ctx := context.Background()
	tp, err := softtpm.New(softtpm.Options{EK: softtpm.EKRSA})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Certify(tp, now)
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.srv.Enroll(ctx, &bulwarkv1.EnrollRequest{EkPublic: tp.EKPublic(), EkCertificate: cert, AkPublic: tp.AKPublic()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.srv.st.UpdateNode(ctx, r.GetNodeId(), func(n *store.Node) error { n.State = store.NodeRevoked; return nil }); err != nil {
		t.Fatal(err)
	}
	_, err = p.srv.Enroll(ctx, &bulwarkv1.EnrollRequest{EkPublic: tp.EKPublic(), EkCertificate: cert, AkPublic: tp.AKPublic()})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "revoked") {
		t.Fatalf("revoked node enrolling again: %v", err)
	}
	ek := append([]byte(nil), tp.EKPublic()...)
	ek[6] |= 0x04 // objectAttributes: noDA
	_, err = p.srv.Enroll(ctx, &bulwarkv1.EnrollRequest{EkPublic: ek, EkCertificate: cert, AkPublic: tp.AKPublic()})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "ek_public") {
		t.Fatalf("re-encoded EK of a revoked node: %v, want InvalidArgument on ek_public", err)
	}
	nodes, err := p.srv.st.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.ID != r.GetNodeId() && n.ID != p.node {
			t.Fatalf("a second node %s was created for the revoked TPM", n.ID)
		}
	}
}
