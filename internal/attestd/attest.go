package attestd

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/bulwark-project/bulwark/token"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Attest verifies the request (VerifyAttestation), judges it by policy,
// records the verdict durably (store and audit log) and answers with a
// signed token (unless the request set omit_token). A deny is an answer
// with reasons, not an error; a refused request (a failed check) is an
// error and no verdict.
func (s *Server) Attest(ctx context.Context, req *bulwarkv1.AttestRequest) (*bulwarkv1.AttestResponse, error) {
	v, err := s.VerifyAttestation(ctx, req)
	if err != nil {
		s.metrics.Attestations.WithLabelValues("error").Inc()
		if audited(err) {
			s.auditRefusal(ctx, store.KindVerdict, req.GetNodeId(), req.GetSandboxId(), "attest", err)
		}
		return nil, s.storeStatus(ctx, "attest", err)
	}
	if isReattest(req) {
		return s.reattest(ctx, v, req)
	}
	j := s.judge(ctx, v.judged(), req.GetSignatures())
	if !j.Allow && len(j.Reasons) == 0 {
		j.Reasons = []string{"denied by policy"}
	}
	out, err := s.finish(ctx, v, j, !req.GetOmitToken())
	if err == nil && req.GetReattestIntervalSeconds() > 0 {
		// A sandbox the host service will re-attest: keep its state. The
		// verdict stands recorded either way; a host whose sandbox is not
		// kept learns it at the first re-attestation (a deny).
		if kerr := s.keepSandbox(ctx, v, req, j); kerr != nil {
			return nil, s.storeStatus(ctx, "attest: keeping the sandbox", kerr)
		}
	}
	return out, err
}

// finish records a verdict and, if withToken, signs its token.
func (s *Server) finish(ctx context.Context, v *Verified, j policy.Verdict, withToken bool) (*bulwarkv1.AttestResponse, error) {
	now := s.now()
	id, err := s.attestationID(now)
	if err != nil {
		return nil, s.storeStatus(ctx, "attest", err)
	}
	exp := now.Add(s.tokenTTL)
	verdict := "deny"
	if j.Allow {
		verdict = "allow"
	} else {
		j.Secrets = nil
	}
	event := v.ev.Event()
	var tok string
	if withToken {
		gk := sha256.Sum256(event.GuestPublicKey)
		c := &token.Claims{
			Issuer: token.Issuer, ID: id, Node: v.node.ID, Sandbox: event.SandboxID, Policy: j.Policy,
			Digests: token.Digests{Kernel: event.Kernel, Initrd: event.Initrd, Cmdline: event.CmdlineDigest,
				Image: event.Image, ImageConfig: event.ImageConfig},
			GuestKeyHash: "sha256:" + hex.EncodeToString(gk[:]), Verdict: verdict, Reasons: j.Reasons,
			IssuedAt: now.Unix(), ExpiresAt: exp.Unix(), LaunchPCR: uint32(v.ev.LaunchPCR()), LaunchPCRHash: hex.EncodeToString(v.ev.LaunchPCRValue()),
		}
		if tok, err = s.tokens.Sign(c); err != nil {
			return nil, s.storeStatus(ctx, "attest: token", err)
		}
	}
	a := store.Attestation{
		ID: id, NodeID: v.node.ID, Policy: j.Policy, Allow: j.Allow, Reasons: j.Reasons,
		SandboxID: event.SandboxID, GuestPublicKey: event.GuestPublicKey, Secrets: j.Secrets, CreatedAt: now,
	}
	if j.Allow && len(j.Secrets) > 0 {
		a.ReleaseExpires = exp
	}
	if _, err := s.st.RecordAttestation(ctx, a); err != nil {
		s.metrics.Attestations.WithLabelValues("error").Inc()
		if errors.Is(err, store.ErrNotFound) {
			return nil, status.Error(codes.NotFound, "node_id: not enrolled (node deleted meanwhile)")
		}
		return nil, s.storeStatus(ctx, "attest: recording verdict", err)
	}
	s.metrics.Attestations.WithLabelValues(verdict).Inc()
	s.log.InfoContext(ctx, "verdict", "attestation", id, "node", v.node.ID, "sandbox", event.SandboxID,
		"policy", j.Policy, "verdict", verdict, "reasons", len(j.Reasons), "secrets", len(j.Secrets))
	out := &bulwarkv1.AttestResponse{
		Verdict: bulwarkv1.Verdict_VERDICT_DENY, Reasons: j.Reasons, AttestationId: id, Token: tok,
		ExpiresAt: timestamppb.New(exp), Policy: j.Policy,
	}
	if j.Allow {
		out.Verdict = bulwarkv1.Verdict_VERDICT_ALLOW
	}
	return out, nil
}

// attestationID returns a new attestation id: "att-" and 32 hex digits,
// the first 12 the time in milliseconds and the other 20 random (80 bits).
// Ids that sort by time keep the store's inserts at the end of its index
// (one page touched per commit instead of one per verdict), and 80 random
// bits keep them unguessable: the release an id names can be consumed
// only once.
func (s *Server) attestationID(now time.Time) (string, error) {
	r, err := s.randomBytes(10)
	if err != nil {
		return "", err
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	copy(b[6:], r)
	return "att-" + hex.EncodeToString(b[:]), nil
}
