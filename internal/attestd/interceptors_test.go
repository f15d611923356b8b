package attestd

import (
	"context"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRecoveryInterceptor: a panicking handler answers Internal with a
// generic message and is counted; admin methods without a peer are denied
// before the handler runs.
func TestRecoveryInterceptor(t *testing.T) {
	p := newInproc(t)
	s := p.srv
	panicky := func(ctx context.Context, req any) (any, error) { panic("boom: secret=hunter2") }
	_, err := s.unaryInterceptor(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/bulwark.v1.Attestation/Attest"}, panicky)
	st := status.Convert(err)
	if st.Code() != codes.Internal || st.Message() != "internal error" {
		t.Fatalf("got %v", err)
	}
	var m dto.Metric
	if err := s.metrics.Panics.Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("panics counted: %v %v", m.GetCounter().GetValue(), err)
	}
	ran := false
	_, err = s.unaryInterceptor(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/bulwark.v1.Admin/ListSecrets"},
		func(ctx context.Context, req any) (any, error) { ran = true; return nil, nil })
	if status.Code(err) != codes.PermissionDenied || ran {
		t.Fatalf("admin without peer: %v (handler ran: %v)", err, ran)
	}
}
