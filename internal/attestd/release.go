package attestd

import (
	"context"
	"errors"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/token"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ReleaseSecrets releases, once, the secrets a passing attestation grants,
// within its validity window. Each secret is HPKE-wrapped by the vault to
// the guest public key recorded in the attested launch event (and bound to
// the sandbox id and the secret name) — never to a key from the request,
// never in clear. Every release is audited with the names only, in the
// store transaction that consumes the window: if that fails, nothing is
// returned and the window stays open.
func (s *Server) ReleaseSecrets(ctx context.Context, req *bulwarkv1.ReleaseSecretsRequest) (*bulwarkv1.ReleaseSecretsResponse, error) {
	if err := validateRelease(req); err != nil {
		return nil, err
	}
	id := req.GetAttestationId()
	if tok := req.GetToken(); tok != "" {
		c, err := token.Verify(tok, s.tokens.Public(), s.now())
		if err != nil {
			s.metrics.Releases.WithLabelValues("refused").Inc()
			return nil, status.Errorf(codes.PermissionDenied, "token: %v", err)
		}
		if c.Verdict != "allow" {
			s.metrics.Releases.WithLabelValues("refused").Inc()
			return nil, status.Error(codes.PermissionDenied, "token: the attestation was denied; nothing is released")
		}
		id = c.ID
		if err := validateAttestationID("token", id); err != nil {
			return nil, err
		}
	}
	// Check the window, wrap the secrets, then consume the window together
	// with its audit record (one store transaction): a release that fails
	// before that step (vault, store) leaves the window open for a retry,
	// and no release is durable without its record. Concurrent requests may
	// each wrap; only the one whose ConsumeRelease succeeds answers with
	// the secrets.
	now := s.now()
	a, err := s.st.GetAttestation(ctx, id)
	if err == nil {
		err = store.Releasable(a, now)
	}
	if errors.Is(err, store.ErrReleaseDenied) && a.Allow && len(a.Secrets) == 0 {
		// An allow that grants no secrets has nothing to release: answer
		// with an empty list (within the token's validity), so a launcher
		// need not special-case it. A deny stays refused.
		if now.Before(a.CreatedAt.Add(s.tokenTTL)) {
			s.metrics.Releases.WithLabelValues("ok").Inc()
			return &bulwarkv1.ReleaseSecretsResponse{SandboxId: a.SandboxID}, nil
		}
		err = store.ErrReleaseExpired
	}
	if err != nil {
		s.metrics.Releases.WithLabelValues("refused").Inc()
		return nil, s.storeStatus(ctx, "attestation_id: "+id, err)
	}
	if !a.Allow || len(a.Secrets) == 0 { // the store refuses these too; fail closed twice
		s.metrics.Releases.WithLabelValues("refused").Inc()
		return nil, status.Error(codes.PermissionDenied, "release: the attestation grants no secrets")
	}
	if err := s.checkNotEnded(ctx, a); err != nil {
		s.metrics.Releases.WithLabelValues("refused").Inc()
		return nil, err
	}
	wrapped, err := s.vault.Release(ctx, a.Secrets, a.GuestPublicKey, a.SandboxID)
	if err != nil {
		s.metrics.Releases.WithLabelValues("refused").Inc()
		return nil, s.storeStatus(ctx, "release", err)
	}
	if a, _, err = s.st.ConsumeRelease(ctx, id, s.now()); err != nil {
		s.metrics.Releases.WithLabelValues("refused").Inc()
		return nil, s.storeStatus(ctx, "attestation_id: "+id, err)
	}
	out := &bulwarkv1.ReleaseSecretsResponse{SandboxId: a.SandboxID, Secrets: make([]*bulwarkv1.WrappedSecret, 0, len(wrapped))}
	for _, w := range wrapped {
		out.Secrets = append(out.Secrets, &bulwarkv1.WrappedSecret{Name: w.Name, Wrapped: w.Sealed})
	}
	s.metrics.Releases.WithLabelValues("ok").Inc()
	s.metrics.SecretsOut.Add(float64(len(wrapped)))
	s.log.InfoContext(ctx, "secrets released", "attestation", a.ID, "node", a.NodeID, "sandbox", a.SandboxID, "names", a.Secrets)
	return out, nil
}

// checkNotEnded refuses a release to a sandbox whose END record is in
// its node's verified launch log: an ended sandbox is never judged alive,
// and holds no key to release to.
func (s *Server) checkNotEnded(ctx context.Context, a store.Attestation) error {
	hv, err := s.st.ReadLaunchPrefix(ctx, a.NodeID, 0, a.SandboxID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return s.storeStatus(ctx, "release", err)
	}
	if _, end := splitEnd(hv.Sandbox); end != nil {
		return status.Errorf(codes.PermissionDenied, "release: sandbox %s has ended: its END record (record %d) is in the node's verified launch log; nothing is released", a.SandboxID, end.RecNum)
	}
	return nil
}

// GetSigningKeys returns the token verification key, as DER and as a JWKS.
func (s *Server) GetSigningKeys(ctx context.Context, _ *bulwarkv1.GetSigningKeysRequest) (*bulwarkv1.GetSigningKeysResponse, error) {
	der, err := marshalPKIX(s.tokens.Public())
	if err != nil {
		return nil, s.storeStatus(ctx, "signing keys", err)
	}
	return &bulwarkv1.GetSigningKeysResponse{
		Keys: []*bulwarkv1.SigningKey{{Kid: s.tokens.KeyID(), Alg: "ES256", PublicKey: der}},
		Jwks: string(s.tokens.JWKS()),
	}, nil
}
