package attestd

import (
	"bytes"
	"context"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ChallengeAttest is Challenge and then Attest on one stream: one call
// where there were two, which spares attestd a call's set-up, headers and
// trailers per attestation. Each step goes through unaryInterceptor as
// its unary RPC would (the per-peer rate limit on the challenge, metrics
// and log lines under Challenge's and Attest's names, panic recovery) and
// runs the unary handler itself, so every check and refusal is theirs;
// a refusal ends the stream with its status. What the stream adds is its
// own shape: a challenge first (not for WatchNode: watch unset), then an
// attest request of the same node over the nonce just issued, arriving
// within the request timeout of the challenge's answer.
func (s *Server) ChallengeAttest(ss grpc.BidiStreamingServer[bulwarkv1.ChallengeAttestRequest, bulwarkv1.ChallengeAttestResponse]) error {
	ctx := ss.Context()
	first, err := ss.Recv()
	if err != nil {
		return recvStatus(err, "challenge")
	}
	chReq := first.GetChallenge()
	switch {
	case chReq == nil:
		return status.Error(codes.InvalidArgument, "challenge: the stream's first message must be a ChallengeRequest")
	case chReq.GetWatch():
		return status.Error(codes.InvalidArgument, "challenge.watch: a ChallengeAttest nonce is for its Attest; ask Challenge for a WatchNode nonce")
	}
	resp, err := s.step(ctx, bulwarkv1.Attestation_Challenge_FullMethodName, chReq, func(ctx context.Context, req any) (any, error) {
		return s.Challenge(ctx, req.(*bulwarkv1.ChallengeRequest))
	})
	if err != nil {
		return err
	}
	ch := resp.(*bulwarkv1.ChallengeResponse)
	// The attest request must arrive within the request timeout of this
	// answer, as a unary request must of its headers: a host that never
	// sends it holds a handler no longer than that.
	rearmArrival(ctx, s.requestTO)
	if err := ss.Send(&bulwarkv1.ChallengeAttestResponse{Step: &bulwarkv1.ChallengeAttestResponse_Challenge{Challenge: ch}}); err != nil {
		return err
	}
	second, err := ss.Recv()
	if err != nil {
		return recvStatus(err, "attest")
	}
	atReq := second.GetAttest()
	switch {
	case atReq == nil:
		return status.Error(codes.InvalidArgument, "attest: the stream's second message must be an AttestRequest")
	case atReq.GetNodeId() != chReq.GetNodeId():
		return status.Error(codes.InvalidArgument, "attest.node_id: not the node the stream's challenge was for")
	case !bytes.Equal(atReq.GetNonce(), ch.GetNonce()):
		return status.Error(codes.InvalidArgument, "attest.nonce: not the nonce the stream's challenge issued")
	}
	resp, err = s.step(ctx, bulwarkv1.Attestation_Attest_FullMethodName, atReq, func(ctx context.Context, req any) (any, error) {
		return s.Attest(ctx, req.(*bulwarkv1.AttestRequest))
	})
	if err != nil {
		return err
	}
	return ss.Send(&bulwarkv1.ChallengeAttestResponse{Step: &bulwarkv1.ChallengeAttestResponse_Attest{Attest: resp.(*bulwarkv1.AttestResponse)}})
}

// step runs one step of a ChallengeAttest stream as the unary RPC method.
func (s *Server) step(ctx context.Context, method string, req any, h grpc.UnaryHandler) (any, error) {
	return s.unaryInterceptor(ctx, req, &grpc.UnaryServerInfo{Server: s, FullMethod: method}, h)
}

// recvStatus is the status for a stream's message that did not arrive:
// the stream's own (cancelled, deadline, a message too large) or, when the
// host closed its side instead, InvalidArgument naming the missing step.
func recvStatus(err error, what string) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.InvalidArgument, "%s: the stream ended before its %s request", what, what)
}

// rearmArrival gives the call d from now for its next message: the
// arrival timer (arrivalDeadline) starts again.
func rearmArrival(ctx context.Context, d time.Duration) {
	if t, ok := ctx.Value(arrivalKey{}).(*time.Timer); ok {
		t.Reset(d)
	}
}
