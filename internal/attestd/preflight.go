package attestd

import (
	"context"
	"errors"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/policy"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Preflight tells an enrolled host, before it boots anything, whether the
// named policy allows the artifacts it is about to launch. It is advisory
// and records nothing: Attest, after the quote is verified, is the
// judgement, and the only path to secrets.
func (s *Server) Preflight(ctx context.Context, req *bulwarkv1.PreflightRequest) (*bulwarkv1.PreflightResponse, error) {
	if err := validatePreflight(req); err != nil {
		return nil, err
	}
	n, err := s.st.GetNode(ctx, req.GetNodeId())
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Error(codes.NotFound, "node_id: not enrolled (run 'launcher enroll')")
	}
	if err != nil {
		return nil, s.storeStatus(ctx, "preflight", err)
	}
	if err := nodeActive(n); err != nil {
		return nil, err
	}
	now := s.now()
	ev := policy.Evidence{
		NodeID: n.ID,
		Event: measure.LaunchEvent{
			Policy: req.GetPolicy(), Kernel: req.GetKernel(), Initrd: req.GetInitrd(),
			Cmdline: req.GetCmdline(), CmdlineDigest: measure.DigestCmdline(measure.SHA256, req.GetCmdline()),
			Image: req.GetImage(), ImageConfig: req.GetImageConfig(), Args: req.GetArgs(), Time: now,
		},
		Signatures: artifactSignatures(req.GetSignatures()),
		Time:       now,
	}
	j := s.policies.Preflight(ctx, ev)
	if !j.Allow && len(j.Reasons) == 0 {
		j.Reasons = []string{"denied by policy"}
	}
	s.log.InfoContext(ctx, "preflight", "node", n.ID, "policy", j.Policy, "allow", j.Allow, "reasons", len(j.Reasons))
	return &bulwarkv1.PreflightResponse{Allow: j.Allow, Reasons: j.Reasons, Policy: j.Policy}, nil
}
