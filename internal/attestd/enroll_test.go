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

// TestEnrollEKCertificate: an EK certificate admits its own EK only, and
// only when it chains to a configured root.
func TestEnrollEKCertificate(t *testing.T) {
	now := time.Now()
	p, ca := newEKCAInproc(t, now)
	otherCA, _ := softtpm.NewEKCA(now)
	ctx := context.Background()
	mk := func(ek softtpm.EKType) *softtpm.TPM {
		tp, err := softtpm.New(softtpm.Options{EK: ek})
		if err != nil {
			t.Fatal(err)
		}
		return tp
	}
	a, b, c := mk(softtpm.EKRSA), mk(softtpm.EKECC), mk(softtpm.EKRSA)
	certA, err := ca.Certify(a, now)
	if err != nil {
		t.Fatal(err)
	}
	certB, _ := ca.Certify(b, now)
	certC, _ := otherCA.Certify(c, now)

	for name, tc := range map[string]struct {
		tp   *softtpm.TPM
		cert []byte
		ok   bool
	}{
		"own certificate (RSA EK)":    {a, certA, true},
		"own certificate (ECC EK)":    {b, certB, true},
		"another EK's certificate":    {c, certA, false},
		"certificate of another CA":   {c, certC, false},
		"garbage certificate":         {c, []byte("not DER"), false},
		"no certificate, not allowed": {c, nil, false},
	} {
		t.Run(name, func(t *testing.T) {
			r, err := p.srv.Enroll(ctx, &bulwarkv1.EnrollRequest{EkPublic: tc.tp.EKPublic(), EkCertificate: tc.cert, AkPublic: tc.tp.AKPublic()})
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				secret, err := tc.tp.ActivateCredential(r.GetCredentialBlob(), r.GetEncryptedSecret())
				if err != nil {
					t.Fatal(err)
				}
				if _, err := p.srv.ActivateCredential(ctx, &bulwarkv1.ActivateCredentialRequest{NodeId: r.GetNodeId(), Secret: secret}); err != nil {
					t.Fatal(err)
				}
				return
			}
			st := status.Convert(err)
			if st.Code() != codes.PermissionDenied || !strings.HasPrefix(st.Message(), "ek_certificate") {
				t.Fatalf("got %v, want PermissionDenied on ek_certificate", err)
			}
		})
	}

	// An expired challenge is refused.
	r, err := p.srv.Enroll(ctx, &bulwarkv1.EnrollRequest{EkPublic: a.EKPublic(), EkCertificate: certA, AkPublic: a.AKPublic()})
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := a.ActivateCredential(r.GetCredentialBlob(), r.GetEncryptedSecret())
	p.clock.Advance(DefaultChallengeTTL + time.Second)
	_, err = p.srv.ActivateCredential(ctx, &bulwarkv1.ActivateCredentialRequest{NodeId: r.GetNodeId(), Secret: secret})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "expired") {
		t.Fatalf("expired challenge: %v", err)
	}
}

// newEKCAInproc is an in-process attestd that also trusts EK certificates
// from a fresh CA (its own host stays allow-listed).
func newEKCAInproc(t *testing.T, now time.Time) (*inproc, *softtpm.EKCA) {
	t.Helper()
	ca, err := softtpm.NewEKCA(now)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return newInprocWith(t, func(c *Config) { c.EKRoots = roots }), ca
}

// TestRevokedEKCannotReenrollReencoded: a revoked host stays revoked. Its
// EK certificate binds only the key, so the same EK sent with another
// encoding (here the noDA attribute bit added) must not enroll as a new
// node; it is refused as not a canonical EK.
func TestRevokedEKCannotReenrollReencoded(t *testing.T) {
	now := time.Now()
	p, ca := newEKCAInproc(t, now)
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
