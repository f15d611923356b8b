package attestd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// credentialSecretSize is the size of the MakeCredential secret.
const credentialSecretSize = 32

// Enroll registers a host's EK and AK. The EK must be trusted — its
// certificate chains to an --ek-ca root and certifies this very key, or its
// node id is allow-listed — and the AK must be a restricted signing key.
// The answer is a MakeCredential challenge for the AK's name under the EK;
// only a hash of the secret is kept, with an expiry.
//
// A node that is already active keeps its AK: enrolling it again with the
// same AK issues a new challenge without demoting it; with another AK it is
// refused (an admin deletes the node first), so nobody holding only the
// public EK can knock an active host out.
//
// Nothing is audited here: the EK (and its certificate) is public, so
// anyone may enroll a not yet active node with an AK of their own. The
// enrollment is audited when ActivateCredential proves the AK is in that
// EK's TPM.
func (s *Server) Enroll(ctx context.Context, req *bulwarkv1.EnrollRequest) (*bulwarkv1.EnrollResponse, error) {
	if err := validateEnroll(req); err != nil {
		return nil, err
	}
	ek, err := verify.ParseEKPublic(req.GetEkPublic())
	if err != nil {
		return nil, invalid("ek_public", "%v", err)
	}
	ak, err := verify.ParseAKPublic(req.GetAkPublic())
	if err != nil {
		return nil, invalid("ak_public", "%v", err)
	}
	nodeID := limits.NodeID(ek.Raw)
	how, err := s.trustEK(ek, req.GetEkCertificate(), nodeID)
	if err != nil {
		return nil, err
	}
	// Only a certificate that was checked against this EK is kept (an
	// allow-listed EK needs none, and one sent anyway may be anything).
	ekCert := req.GetEkCertificate()
	if how != "certificate" {
		ekCert = nil
	}
	secret, err := s.randomBytes(credentialSecretSize)
	if err != nil {
		return nil, s.storeStatus(ctx, "enroll", err)
	}
	blob, encSecret, err := verify.MakeCredential(ek.Raw, ak.Name, secret)
	if err != nil {
		return nil, s.storeStatus(ctx, "enroll: make credential", err)
	}
	sum := sha256.Sum256(secret)
	clear(secret)
	now := s.now()
	ch := &store.Challenge{SecretHash: sum[:], Expires: now.Add(s.challengeTTL)}

	err = s.st.CreateNode(ctx, store.Node{
		ID: nodeID, EKPublic: ek.Raw, EKCert: ekCert, AKPublic: ak.Raw, AKName: ak.Name,
		State: store.NodeEnrolled, Challenge: ch,
	})
	changed := err == nil // a new node; below, a new AK
	if errors.Is(err, store.ErrConflict) {
		_, err = s.st.UpdateNode(ctx, nodeID, func(n *store.Node) error {
			switch {
			case n.State == store.NodeRevoked:
				return status.Error(codes.PermissionDenied, "ek_public: this node is revoked; an admin must delete it before it enrolls again")
			case n.State == store.NodeActive && !bytes.Equal(n.AKPublic, ak.Raw):
				return status.Error(codes.FailedPrecondition, "ak_public: this node is active with another AK; an admin must delete the node (attestd ctl nodes rm) before a new AK enrolls")
			}
			changed = !bytes.Equal(n.AKPublic, ak.Raw)
			n.AKPublic, n.AKName, n.Challenge = ak.Raw, ak.Name, ch
			if len(ekCert) > 0 {
				n.EKCert = ekCert
			}
			return nil
		})
	}
	if err != nil {
		return nil, s.storeStatus(ctx, "enroll", err)
	}
	s.log.DebugContext(ctx, "node enrolled", "node", nodeID, "ek_trust", how, "new_ak", changed)
	return &bulwarkv1.EnrollResponse{
		NodeId: nodeID, CredentialBlob: blob, EncryptedSecret: encSecret, ExpiresAt: timestamppb.New(ch.Expires),
	}, nil
}

// trustEK decides whether an EK may enroll and says how ("allow-list" or
// "certificate").
func (s *Server) trustEK(ek *verify.Public, certDER []byte, nodeID string) (string, error) {
	if s.ekAllow[nodeID] {
		return "allow-list", nil
	}
	// Each refusal names the node and both ways to admit it: the node id
	// is what an --ek-allow file lists, and --ek-ca the CA an EK
	// certificate must chain to.
	if len(certDER) == 0 {
		return "", status.Errorf(codes.PermissionDenied, "ek_certificate: missing (this TPM has no EK certificate), and node %s is not allow-listed: add that node id to the file given to attestd serve --ek-allow", nodeID)
	}
	if s.ekRoots == nil {
		return "", status.Errorf(codes.PermissionDenied, "ek_certificate: attestd trusts no EK CA, and node %s is not allow-listed: start attestd serve with --ek-ca FILE (the CA that issued the TPM's EK certificate), or add that node id to its --ek-allow file", nodeID)
	}
	// The certificate must chain to the roots and certify this EK.
	if _, err := verify.VerifyEKCertificate(certDER, ek.Raw, verify.EKCertOptions{Roots: s.ekRoots, Intermediates: s.ekInter, Now: s.now}); err != nil {
		return "", status.Errorf(codes.PermissionDenied, "ek_certificate of node %s: %v: give attestd serve --ek-ca FILE with the CA that issued it, or add that node id to its --ek-allow file", nodeID, err)
	}
	return "certificate", nil
}

// ActivateCredential completes enrollment: the AK is trusted only if the
// secret matches the pending challenge (constant time) before it expires.
// The activation is the enrollment's audit record (the EK's trust and the
// AK's name): the first point where the caller has proven the AK lives in
// the EK's TPM.
func (s *Server) ActivateCredential(ctx context.Context, req *bulwarkv1.ActivateCredentialRequest) (*bulwarkv1.ActivateCredentialResponse, error) {
	if err := validateActivate(req); err != nil {
		return nil, err
	}
	n, err := store.ConsumeChallenge(ctx, s.st, req.GetNodeId(), req.GetSecret(), s.now())
	if err != nil {
		// Not audited: anyone holding a node's public EK and AK can have a
		// challenge issued (Enroll) and answer it wrongly, as often as they
		// like, so a refusal here proves nothing and would only let them
		// write to the serialized audit chain. The interceptor counts it
		// and logs it (sampled).
		if errors.Is(err, store.ErrNotFound) {
			return nil, status.Error(codes.NotFound, "node_id: not enrolled (call Enroll)")
		}
		return nil, s.storeStatus(ctx, "activate", err)
	}
	how := "allow-list"
	if len(n.EKCert) > 0 {
		how = "certificate" // Enroll keeps only a certificate it checked
	}
	details, _ := json.Marshal(map[string]any{"event": "activate", "ek_trust": how, "ak_name": fmt.Sprintf("%x", n.AKName)})
	if err := s.appendAudit(ctx, store.AuditEntry{Kind: store.KindEnroll, NodeID: n.ID, Subject: n.ID, Details: details}); err != nil {
		return nil, s.storeStatus(ctx, "activate: audit", err)
	}
	s.log.InfoContext(ctx, "node activated", "node", req.GetNodeId())
	return &bulwarkv1.ActivateCredentialResponse{NodeId: req.GetNodeId()}, nil
}

// Challenge issues a fresh single-use nonce bound to an active node and,
// when asked, reports the prefix of its launch log attestd has verified.
func (s *Server) Challenge(ctx context.Context, req *bulwarkv1.ChallengeRequest) (*bulwarkv1.ChallengeResponse, error) {
	if err := validateNodeID("node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	n, err := s.st.GetNode(ctx, req.GetNodeId())
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Error(codes.NotFound, "node_id: not enrolled (call Enroll)")
	}
	if err != nil {
		return nil, s.storeStatus(ctx, "challenge", err)
	}
	if err := nodeActive(n); err != nil && !(req.GetWatch() && n.State == store.NodeRevoked) {
		return nil, err
	}
	nonce, err := s.randomBytes(NonceSize)
	if err != nil {
		return nil, s.storeStatus(ctx, "challenge", err)
	}
	exp := s.now().Add(s.nonceTTL)
	if err := s.st.IssueNonce(ctx, store.Nonce{Value: nonce, NodeID: n.ID, Expires: exp}); err != nil {
		return nil, s.storeStatus(ctx, "challenge", err)
	}
	out := &bulwarkv1.ChallengeResponse{Nonce: nonce, ExpiresAt: timestamppb.New(exp)}
	if req.GetLaunchLogPrefix() {
		v, err := s.st.ReadLaunchPrefix(ctx, n.ID, 0, "")
		switch {
		case err == nil:
			out.LaunchLogPrefix = &bulwarkv1.LaunchLogPrefix{Events: v.Prefix.Events, PcrValue: v.Prefix.PCR}
		case !errors.Is(err, store.ErrNotFound):
			return nil, s.storeStatus(ctx, "challenge", err)
		}
	}
	return out, nil
}

func nodeActive(n store.Node) error {
	switch n.State {
	case store.NodeActive:
		return nil
	case store.NodeRevoked:
		return status.Error(codes.PermissionDenied, "node_id: node is revoked")
	default:
		return status.Error(codes.FailedPrecondition, "node_id: AK not activated yet (call ActivateCredential)")
	}
}

// auditRefusal records a refused request about a known node. Failing to
// write it is logged, not returned: the refusal stands either way.
func (s *Server) auditRefusal(ctx context.Context, kind store.AuditKind, nodeID, subject, what string, cause error) {
	if errors.Is(cause, store.ErrNotFound) {
		return // unknown nodes are not audited: anyone can make those up
	}
	msg := status.Convert(s.storeStatus(ctx, what, cause)).Message()
	details, _ := json.Marshal(map[string]any{"event": what, "refused": msg})
	if err := s.appendAudit(ctx, store.AuditEntry{Kind: kind, NodeID: nodeID, Subject: subject, Details: details}); err != nil {
		s.log.ErrorContext(ctx, "audit of a refusal failed", "node", nodeID, "what", what, "error", err)
		return
	}
	markAudited(ctx)
}

// MaxAuditSubject bounds an audit record's subject (a node, sandbox,
// attestation, secret or policy name).
const MaxAuditSubject = 256

// validAuditSubject accepts 1..MaxAuditSubject bytes of [A-Za-z0-9._:-]:
// the node ids, sandbox ids, attestation ids and secret names attestd
// writes as subjects, and nothing a reader of the log could mistake for
// structure (no spaces, quotes, control characters or newlines).
func validAuditSubject(s string) error {
	if s == "" || len(s) > MaxAuditSubject {
		return fmt.Errorf("audit subject of %d bytes, want 1..%d: %w", len(s), MaxAuditSubject, store.ErrInvalid)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return fmt.Errorf("audit subject %q: want only letters, digits, '.', '_', ':' and '-': %w", trunc(s), store.ErrInvalid)
		}
	}
	return nil
}

// appendAudit writes e to the audit log once its subject is valid.
func (s *Server) appendAudit(ctx context.Context, e store.AuditEntry) error {
	if err := validAuditSubject(e.Subject); err != nil {
		return err
	}
	_, err := s.st.AppendAudit(ctx, e)
	return err
}
