package attestd

import (
	"bytes"
	"context"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/enclave"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/storetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestReleaseFailureKeepsWindow: a release that fails after its window was
// checked — the vault cannot open the secret's ciphertext, or the secret
// is gone — returns nothing and leaves the window open; once the vault is
// whole again the attestation releases, exactly once, with exactly one
// release audit record. (ReleaseSecrets used to mark the window used
// before asking the vault, so the host could never release again.)
func TestReleaseFailureKeepsWindow(t *testing.T) {
	for _, tc := range []struct {
		name   string
		code   codes.Code
		break_ func(t *testing.T, p *inproc) (restore func())
	}{
		{"vault cannot open the ciphertext", codes.Internal, func(t *testing.T, p *inproc) func() {
			// Flip a byte of the stored ciphertext: the vault's AEAD open fails.
			ctx := context.Background()
			orig, err := p.srv.st.GetSecret(ctx, "db-password")
			if err != nil {
				t.Fatal(err)
			}
			bad := orig
			bad.Ciphertext = bytes.Clone(orig.Ciphertext)
			bad.Ciphertext[len(bad.Ciphertext)-1] ^= 1
			bad.Version = orig.Version + 1
			if err := p.srv.st.PutSecret(ctx, bad, orig.Version); err != nil {
				t.Fatal(err)
			}
			return func() { // the vault binds a ciphertext to its version: put it again
				if _, err := p.srv.vault.Put(ctx, "db-password", []byte("s3cret"), enclave.Meta{}); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"secret missing from the vault", codes.NotFound, func(t *testing.T, p *inproc) func() {
			ctx := context.Background()
			if err := p.srv.vault.Delete(ctx, "db-password"); err != nil {
				t.Fatal(err)
			}
			return func() {
				if _, err := p.srv.vault.Put(ctx, "db-password", []byte("s3cret"), enclave.Meta{}); err != nil {
					t.Fatal(err)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newInproc(t)
			ctx := context.Background()
			res, err := p.srv.Attest(ctx, p.request(t))
			if err != nil || res.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
				t.Fatalf("attest: %v %v", res.GetVerdict(), err)
			}
			id := res.GetAttestationId()
			req := &bulwarkv1.ReleaseSecretsRequest{Ref: &bulwarkv1.ReleaseSecretsRequest_AttestationId{AttestationId: id}}

			restore := tc.break_(t, p)
			out, err := p.srv.ReleaseSecrets(ctx, req)
			if status.Code(err) != tc.code || out != nil {
				t.Fatalf("release with a broken vault: %v, %v; want %v and nothing", out, err, tc.code)
			}
			if n := storetest.ReleaseRecords(t, p.srv.st, id); n != 0 {
				t.Fatalf("a failed release wrote %d release audit records", n)
			}
			a, err := p.srv.st.GetAttestation(ctx, id)
			if err != nil || !a.ReleasedAt.IsZero() {
				t.Fatalf("a failed release consumed the window: %+v %v", a, err)
			}

			restore()
			out, err = p.srv.ReleaseSecrets(ctx, req)
			if err != nil {
				t.Fatalf("release after the vault is whole again: %v", err)
			}
			if len(out.GetSecrets()) != 1 {
				t.Fatalf("released %d secrets, want 1", len(out.GetSecrets()))
			}
			w := out.GetSecrets()[0]
			pt, err := p.ev.GuestKey.Open(out.GetSandboxId(), w.GetName(), w.GetWrapped())
			if err != nil || string(pt) != "s3cret" {
				t.Fatalf("guest cannot open the released secret: %q %v", pt, err)
			}
			if _, err := p.srv.ReleaseSecrets(ctx, req); status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("second release: %v, want it refused", err)
			}
			if n := storetest.ReleaseRecords(t, p.srv.st, id); n != 1 {
				t.Fatalf("%d release audit records, want exactly 1", n)
			}
			if _, err := store.VerifyAudit(ctx, p.srv.st, store.VerifyOptions{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
