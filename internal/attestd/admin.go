package attestd

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/enclave"
	"github.com/bulwark-project/bulwark/internal/store"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// adminServer implements the Admin service. The interceptor has already
// admitted the caller (admin client certificate) before any method runs.
type adminServer struct {
	bulwarkv1.UnimplementedAdminServer
	s *Server
}

func (a *adminServer) audit(ctx context.Context, subject string, fields map[string]any) error {
	fields["by"] = adminName(ctx)
	details, _ := json.Marshal(fields)
	return a.s.appendAudit(ctx, store.AuditEntry{Kind: store.KindAdmin, Subject: subject, Details: details})
}

func validateSecretName(name string) error {
	if name == "" {
		return invalid("name", "missing")
	}
	if !enclave.ValidName(name) {
		return invalid("name", "want 1-128 of [A-Za-z0-9._-] starting with a letter or digit")
	}
	return nil
}

// validatePutSecret checks a PutSecret request's name, value and metadata.
func validatePutSecret(req *bulwarkv1.PutSecretRequest) error {
	if err := validateSecretName(req.GetName()); err != nil {
		return err
	}
	if len(req.GetValue()) == 0 {
		return invalid("value", "missing")
	}
	if len(req.GetValue()) > enclave.MaxSecretSize {
		return invalid("value", "%d bytes, the limit is %d", len(req.GetValue()), enclave.MaxSecretSize)
	}
	for k, v := range req.GetMetadata() {
		if k != "description" {
			return invalid("metadata", "key %q: only \"description\" is supported", trunc(k))
		}
		if len(v) > 1024 {
			return invalid("metadata", "description is %d bytes, the limit is 1024", len(v))
		}
		if strings.ContainsRune(v, 0) {
			return invalid("metadata", "description contains a NUL byte")
		}
	}
	return nil
}

func (a *adminServer) PutSecret(ctx context.Context, req *bulwarkv1.PutSecretRequest) (*bulwarkv1.PutSecretResponse, error) {
	if err := validatePutSecret(req); err != nil {
		return nil, err
	}
	meta, err := a.s.vault.Put(ctx, req.GetName(), req.GetValue(), enclave.Meta{Description: req.GetMetadata()["description"]})
	clear(req.Value)
	if err != nil {
		return nil, a.s.storeStatus(ctx, "secret "+req.GetName(), err)
	}
	if err := a.audit(ctx, req.GetName(), map[string]any{"action": "secret.put", "name": req.GetName(), "version": meta.Version, "size": meta.Size}); err != nil {
		return nil, a.s.storeStatus(ctx, "audit", err)
	}
	// A new version reaches the running sandboxes that hold the secret.
	if err := a.s.secretRotated(ctx, req.GetName(), meta.Version); err != nil {
		return nil, err
	}
	return &bulwarkv1.PutSecretResponse{Version: meta.Version}, nil
}

func (a *adminServer) DeleteSecret(ctx context.Context, req *bulwarkv1.DeleteSecretRequest) (*bulwarkv1.DeleteSecretResponse, error) {
	if err := validateSecretName(req.GetName()); err != nil {
		return nil, err
	}
	if err := a.s.vault.Delete(ctx, req.GetName()); err != nil {
		return nil, a.s.storeStatus(ctx, "secret "+req.GetName(), err)
	}
	if err := a.audit(ctx, req.GetName(), map[string]any{"action": "secret.delete", "name": req.GetName()}); err != nil {
		return nil, a.s.storeStatus(ctx, "audit", err)
	}
	// It leaves the running sandboxes that hold it.
	if err := a.s.secretDeleted(ctx, req.GetName()); err != nil {
		return nil, err
	}
	return &bulwarkv1.DeleteSecretResponse{}, nil
}

func (a *adminServer) ListSecrets(ctx context.Context, _ *bulwarkv1.ListSecretsRequest) (*bulwarkv1.ListSecretsResponse, error) {
	metas, err := a.s.vault.List(ctx)
	if err != nil {
		return nil, a.s.storeStatus(ctx, "secrets", err)
	}
	out := &bulwarkv1.ListSecretsResponse{}
	for _, m := range metas {
		si := &bulwarkv1.SecretInfo{Name: m.Name, Version: m.Version, Size: uint64(m.Size), UpdatedAt: timestamppb.New(m.UpdatedAt)}
		if m.Description != "" {
			si.Metadata = map[string]string{"description": m.Description}
		}
		out.Secrets = append(out.Secrets, si)
	}
	return out, nil
}

func (a *adminServer) ListNodes(ctx context.Context, _ *bulwarkv1.ListNodesRequest) (*bulwarkv1.ListNodesResponse, error) {
	nodes, err := a.s.st.ListNodes(ctx)
	if err != nil {
		return nil, a.s.storeStatus(ctx, "nodes", err)
	}
	out := &bulwarkv1.ListNodesResponse{}
	for _, n := range nodes {
		pn := &bulwarkv1.Node{NodeId: n.ID, EkFingerprint: strings.TrimPrefix(n.ID, "sha256:"), Activated: n.State == store.NodeActive,
			State: string(n.State), EnrolledAt: timestamppb.New(n.CreatedAt)}
		if lv := n.LastVerdict; lv != nil {
			pn.LastVerdict = "deny"
			if lv.Allow {
				pn.LastVerdict = "allow"
			}
			pn.LastAttestedAt = timestamppb.New(lv.Time)
			if att, err := a.s.st.GetAttestation(ctx, lv.AttestationID); err == nil {
				pn.LastSandboxId = att.SandboxID
			}
		}
		out.Nodes = append(out.Nodes, pn)
	}
	return out, nil
}

// ListSandboxes lists the kept sandboxes with their effective verdict
// (stale for an allow older than twice the interval) and its age.
func (a *adminServer) ListSandboxes(ctx context.Context, req *bulwarkv1.ListSandboxesAdminRequest) (*bulwarkv1.ListSandboxesAdminResponse, error) {
	if n := req.GetNodeId(); n != "" {
		if err := validateNodeID("node_id", n); err != nil {
			return nil, err
		}
	}
	sts, err := a.s.st.ListSandboxStates(ctx, req.GetNodeId())
	if err != nil {
		return nil, a.s.storeStatus(ctx, "sandboxes", err)
	}
	now := a.s.now()
	out := &bulwarkv1.ListSandboxesAdminResponse{}
	for i := range sts {
		st := &sts[i]
		ss := &bulwarkv1.SandboxState{NodeId: st.NodeID, SandboxId: st.SandboxID, Policy: st.Policy, JudgedBy: st.JudgedBy,
			Verdict: string(st.Effective(now)), Reasons: st.Reasons, VerdictAt: timestamppb.New(st.VerdictAt),
			IntervalSeconds: uint32(st.Interval / time.Second), AgeSeconds: now.Sub(st.VerdictAt).Seconds()}
		for _, x := range st.Secrets {
			ss.Secrets = append(ss.Secrets, x.Name)
		}
		out.Sandboxes = append(out.Sandboxes, ss)
	}
	return out, nil
}

func (a *adminServer) DeleteNode(ctx context.Context, req *bulwarkv1.DeleteNodeRequest) (*bulwarkv1.DeleteNodeResponse, error) {
	if err := validateNodeID("node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	if err := a.s.st.DeleteNode(ctx, req.GetNodeId()); err != nil {
		return nil, a.s.storeStatus(ctx, "node "+req.GetNodeId(), err)
	}
	if err := a.audit(ctx, req.GetNodeId(), map[string]any{"action": "node.delete", "node": req.GetNodeId()}); err != nil {
		return nil, a.s.storeStatus(ctx, "audit", err)
	}
	return &bulwarkv1.DeleteNodeResponse{}, nil
}

func (a *adminServer) RevokeNode(ctx context.Context, req *bulwarkv1.RevokeNodeRequest) (*bulwarkv1.RevokeNodeResponse, error) {
	if err := validateNodeID("node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	_, err := a.s.st.UpdateNode(ctx, req.GetNodeId(), func(n *store.Node) error {
		n.State, n.Challenge = store.NodeRevoked, nil
		return nil
	})
	if err != nil {
		return nil, a.s.storeStatus(ctx, "node "+req.GetNodeId(), err)
	}
	if err := a.audit(ctx, req.GetNodeId(), map[string]any{"action": "node.revoke", "node": req.GetNodeId()}); err != nil {
		return nil, a.s.storeStatus(ctx, "audit", err)
	}
	a.s.log.WarnContext(ctx, "node revoked", "node", req.GetNodeId(), "by", adminName(ctx))
	// Its running sandboxes are revoked too: their host service is told
	// (WatchNode), and their guests lose their secrets.
	if _, err := a.s.revokeNode(ctx, req.GetNodeId()); err != nil {
		return nil, err
	}
	return &bulwarkv1.RevokeNodeResponse{}, nil
}

// auditPageLimit is a ReadAudit request's page size: DefaultAuditPage for
// 0, at most MaxAuditPage.
func auditPageLimit(req *bulwarkv1.ReadAuditRequest) (int, error) {
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = DefaultAuditPage
	}
	if limit > MaxAuditPage {
		return 0, invalid("limit", "%d, the limit is %d", limit, MaxAuditPage)
	}
	return limit, nil
}

func (a *adminServer) ReadAudit(ctx context.Context, req *bulwarkv1.ReadAuditRequest) (*bulwarkv1.ReadAuditResponse, error) {
	limit, err := auditPageLimit(req)
	if err != nil {
		return nil, err
	}
	recs, err := a.s.st.ReadAudit(ctx, req.GetAfter(), limit)
	if err != nil {
		return nil, a.s.storeStatus(ctx, "audit", err)
	}
	out := &bulwarkv1.ReadAuditResponse{}
	for _, r := range recs {
		out.Records = append(out.Records, &bulwarkv1.AuditRecord{
			Seq: r.Seq, Time: timestamppb.New(r.Time), Kind: string(r.Kind), Subject: r.Subject,
			Detail: string(r.Details), Hash: hex.EncodeToString(r.Hash), PrevHash: hex.EncodeToString(r.Prev),
		})
	}
	if len(recs) == limit {
		out.Next = recs[len(recs)-1].Seq
	}
	return out, nil
}

func (a *adminServer) VerifyAudit(ctx context.Context, _ *bulwarkv1.VerifyAuditRequest) (*bulwarkv1.VerifyAuditResponse, error) {
	// Records retention purged are vouched for by the seal signed with
	// the token key.
	opts := store.VerifyOptions{SealKey: a.s.tokens.Public()}
	if a.s.cps != nil {
		// A checkpoint file removed while attestd ran is reported, not
		// quietly written anew: what it anchored is no longer vouched for.
		if _, err := a.s.cps.Lost(); err != nil {
			a.s.log.ErrorContext(ctx, "audit checkpoints lost", "error", err)
			return &bulwarkv1.VerifyAuditResponse{Ok: false, Error: err.Error()}, nil
		}
		if _, err := os.Stat(a.s.cps.path); errors.Is(err, os.ErrNotExist) {
			if _, err := a.s.cps.Record(ctx, a.s.st); errors.Is(err, ErrCheckpointsLost) {
				_, lerr := a.s.cps.Lost()
				a.s.log.ErrorContext(ctx, "audit checkpoints lost", "error", lerr)
				return &bulwarkv1.VerifyAuditResponse{Ok: false, Error: lerr.Error()}, nil
			}
		}
		trusted, err := a.s.cps.Trusted(a.s.tokens.Public())
		if err != nil {
			return &bulwarkv1.VerifyAuditResponse{Ok: false, Error: err.Error()}, nil
		}
		opts.Trusted = trusted
	}
	res, err := store.VerifyAudit(ctx, a.s.st, opts)
	out := &bulwarkv1.VerifyAuditResponse{Ok: err == nil, Records: res.Records, HeadHash: hex.EncodeToString(res.Head.Hash)}
	if err != nil {
		if !errors.Is(err, store.ErrAuditChain) {
			return nil, a.s.storeStatus(ctx, "audit", err)
		}
		out.Error = err.Error()
		a.s.log.ErrorContext(ctx, "audit chain does not verify", "error", err)
		return out, nil
	}
	if a.s.cps != nil {
		if _, err := a.s.cps.Record(ctx, a.s.st); err != nil {
			a.s.log.WarnContext(ctx, "recording audit checkpoint", "error", err)
		}
	}
	return out, nil
}

func (a *adminServer) ListPolicies(ctx context.Context, _ *bulwarkv1.ListPoliciesRequest) (*bulwarkv1.ListPoliciesResponse, error) {
	return &bulwarkv1.ListPoliciesResponse{Policies: policyStates(a.s.policies), LoadedAt: timestamppb.New(a.s.policies.Status().LoadedAt)}, nil
}

func (a *adminServer) ReloadPolicies(ctx context.Context, _ *bulwarkv1.ReloadPoliciesRequest) (*bulwarkv1.ReloadPoliciesResponse, error) {
	err := a.s.policies.Reload()
	if err != nil {
		a.s.metrics.PolicyReloads.WithLabelValues("error").Inc()
		a.s.log.WarnContext(ctx, "policy reload failed; previous policies stay in force", "error", err)
	} else {
		a.s.metrics.PolicyReloads.WithLabelValues("ok").Inc()
	}
	if aerr := a.audit(ctx, "policies", map[string]any{"action": "policy.reload", "ok": err == nil}); aerr != nil {
		return nil, a.s.storeStatus(ctx, "audit", aerr)
	}
	// The running sandboxes are judged by the policies now in force (also
	// after a failed load: the set in force may have changed before).
	if _, rerr := a.s.Rejudge(ctx); rerr != nil {
		return nil, rerr
	}
	return &bulwarkv1.ReloadPoliciesResponse{Policies: policyStates(a.s.policies), Ok: err == nil && a.s.policies.Status().LastError == ""}, nil
}

func marshalPKIX(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	return der, nil
}
