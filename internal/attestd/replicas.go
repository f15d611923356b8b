package attestd

import (
	"context"
	"errors"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/enclave"
	"github.com/bulwark-project/bulwark/internal/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// validateJoinID checks the id of a replica join request.
func validateJoinID(id string) error {
	if id == "" {
		return invalid("id", "missing")
	}
	if !enclave.ValidJoinID(id) {
		return invalid("id", "want the 32 hex digits `attestd replica join` printed")
	}
	return nil
}

// ReplicaJoinInfo is what the admin API shows of a join request: never the
// wrapped key.
func ReplicaJoinInfo(j store.Join) *bulwarkv1.ReplicaJoin {
	return &bulwarkv1.ReplicaJoin{Id: j.ID, Node: j.Node, State: string(j.State), ApprovedBy: j.ApprovedBy, CreatedAt: timestamppb.New(j.CreatedAt)}
}

func (a *adminServer) ListReplicaJoins(ctx context.Context, _ *bulwarkv1.ListReplicaJoinsRequest) (*bulwarkv1.ListReplicaJoinsResponse, error) {
	joins, err := a.s.st.ListJoins(ctx)
	if err != nil {
		return nil, a.s.storeStatus(ctx, "replica joins", err)
	}
	out := &bulwarkv1.ListReplicaJoinsResponse{}
	for _, j := range joins {
		out.Joins = append(out.Joins, ReplicaJoinInfo(j))
	}
	return out, nil
}

func (a *adminServer) ApproveReplicaJoin(ctx context.Context, req *bulwarkv1.ApproveReplicaJoinRequest) (*bulwarkv1.ApproveReplicaJoinResponse, error) {
	if err := validateJoinID(req.GetId()); err != nil {
		return nil, err
	}
	by := adminName(ctx)
	j, err := a.s.vault.ApproveJoin(ctx, a.s.st, req.GetId(), by)
	switch {
	case errors.Is(err, store.ErrConflict):
		return nil, status.Errorf(codes.FailedPrecondition, "replica join %s: not pending (approved already?)", req.GetId())
	case errors.Is(err, enclave.ErrInvalid):
		return nil, status.Errorf(codes.InvalidArgument, "id: join request %s is malformed in the store (its id is not its key's fingerprint): deny it", req.GetId())
	case err != nil:
		return nil, a.s.storeStatus(ctx, "replica join "+req.GetId(), err)
	}
	if err := a.audit(ctx, j.ID, map[string]any{"action": "replica.approve", "join": j.ID, "node": j.Node}); err != nil {
		return nil, a.s.storeStatus(ctx, "audit", err)
	}
	return &bulwarkv1.ApproveReplicaJoinResponse{Join: ReplicaJoinInfo(j)}, nil
}

func (a *adminServer) DenyReplicaJoin(ctx context.Context, req *bulwarkv1.DenyReplicaJoinRequest) (*bulwarkv1.DenyReplicaJoinResponse, error) {
	if err := validateJoinID(req.GetId()); err != nil {
		return nil, err
	}
	if err := a.s.st.DeleteJoin(ctx, req.GetId()); err != nil {
		return nil, a.s.storeStatus(ctx, "replica join "+req.GetId(), err)
	}
	if err := a.audit(ctx, req.GetId(), map[string]any{"action": "replica.deny", "join": req.GetId()}); err != nil {
		return nil, a.s.storeStatus(ctx, "audit", err)
	}
	return &bulwarkv1.DenyReplicaJoinResponse{}, nil
}
