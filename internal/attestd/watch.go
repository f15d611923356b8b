package attestd

import (
	"errors"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/evidence"
	"github.com/bulwark-project/bulwark/internal/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// watchPage is how many decisions WatchNode reads from the store at once.
const watchPage = 100

// validateWatch checks a WatchNode request's shape.
func validateWatch(r *bulwarkv1.WatchNodeRequest) error {
	if err := validateNodeID("node_id", r.GetNodeId()); err != nil {
		return err
	}
	if len(r.GetNonce()) != NonceSize {
		return invalid("nonce", "%d bytes, want %d (the value Challenge returned)", len(r.GetNonce()), NonceSize)
	}
	return validateQuote(r)
}

// WatchNode streams the node's decisions after after_seq, then each new
// one, until the client goes away. The node proves itself as for Attest
// (a quote by its AK over a nonce from Challenge, consumed here); a
// revoked node may watch, and is sent revocations only. A heartbeat opens
// the stream (the host then knows it is watching) and follows every
// Config.WatchPoll without a decision.
func (s *Server) WatchNode(req *bulwarkv1.WatchNodeRequest, stream bulwarkv1.Attestation_WatchNodeServer) error {
	ctx := stream.Context()
	if err := validateWatch(req); err != nil {
		return err
	}
	node, err := s.st.GetNode(ctx, req.GetNodeId())
	if errors.Is(err, store.ErrNotFound) {
		return status.Error(codes.NotFound, "node_id: not enrolled (call Enroll)")
	}
	if err != nil {
		return s.storeStatus(ctx, "watch", err)
	}
	if node.State != store.NodeActive && node.State != store.NodeRevoked {
		return status.Error(codes.FailedPrecondition, "node_id: AK not activated yet (call ActivateCredential)")
	}
	if err := s.st.ConsumeNonce(ctx, req.GetNonce(), node.ID, s.now()); err != nil {
		return s.storeStatus(ctx, "watch", err)
	}
	q := evidence.Quote{AKPublic: node.AKPublic, Quoted: req.GetQuote(), Signature: req.GetSignature(), Nonce: req.GetNonce(),
		PCRs: pcrsByIndex(req.GetPcrs()), LaunchPCR: int(s.launchPCR)}
	if _, err := evidence.VerifyQuote(q); err != nil {
		return evidenceStatus(err)
	}
	changed, unsubscribe := s.watchers.subscribe(node.ID)
	defer unsubscribe()
	after, revoked := req.GetAfterSeq(), node.State == store.NodeRevoked
	if err := stream.Send(&bulwarkv1.NodeDecision{Heartbeat: true, Seq: after, Time: timestamppb.New(s.now())}); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "node watching", "node", node.ID, "after", after)
	t := time.NewTicker(s.watchPoll)
	defer t.Stop()
	for {
		sent := false
		for {
			ds, err := s.st.ListDecisions(ctx, node.ID, after, watchPage)
			if err != nil {
				return s.storeStatus(ctx, "watch", err)
			}
			for i := range ds {
				after = ds[i].Seq
				if revoked && ds[i].Kind != store.DecisionRevoke {
					continue
				}
				if err := stream.Send(decisionProto(&ds[i])); err != nil {
					return err
				}
				sent = true
			}
			if len(ds) < watchPage {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-t.C:
			if !sent {
				if err := stream.Send(&bulwarkv1.NodeDecision{Heartbeat: true, Seq: after, Time: timestamppb.New(s.now())}); err != nil {
					return err
				}
			}
		}
	}
}

// decisionProto is a stored decision as sent.
func decisionProto(d *store.Decision) *bulwarkv1.NodeDecision {
	out := &bulwarkv1.NodeDecision{Seq: d.Seq, SandboxId: d.SandboxID, Action: d.Action, Reasons: d.Reasons, Time: timestamppb.New(d.CreatedAt)}
	switch d.Kind {
	case store.DecisionRevoke:
		out.Kind = bulwarkv1.NodeDecision_KIND_REVOKE
	case store.DecisionRotate:
		out.Kind = bulwarkv1.NodeDecision_KIND_ROTATE
	}
	for _, x := range d.Secrets {
		out.Secrets = append(out.Secrets, &bulwarkv1.WrappedSecret{Name: x.Name, Wrapped: x.Wrapped})
	}
	return out
}
