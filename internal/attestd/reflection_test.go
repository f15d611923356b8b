package attestd

import (
	"context"
	"testing"

	"github.com/bulwark-project/bulwark/internal/attestclient"
	refl "google.golang.org/grpc/reflection/grpc_reflection_v1"
)

// listServices asks the server's reflection service for its services, as
// grpcurl list does.
func listServices(t testing.TB, ctx context.Context, c *attestclient.Client) []string {
	t.Helper()
	stream, err := refl.NewServerReflectionClient(c.Conn()).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend()
	if err := stream.Send(&refl.ServerReflectionRequest{MessageRequest: &refl.ServerReflectionRequest_ListServices{ListServices: ""}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		out = append(out, s.GetName())
	}
	return out
}
