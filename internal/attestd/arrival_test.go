package attestd

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRequestArrivalDeadline: a call whose request never finishes arriving
// is cancelled after RequestTimeout instead of holding a handler for as
// long as the connection lives; calls that arrive are not cut short.
func TestRequestArrivalDeadline(t *testing.T) {
	e := newEnv(t, envOptions{storeKind: "embedded", requestTimeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Headers only: the request message is never sent.
	s, err := e.client.Conn().NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, "/bulwark.v1.Attestation/Challenge")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var out struct{}
	err = s.RecvMsg(&out)
	took := time.Since(start)
	if code := status.Code(err); code != codes.Canceled && code != codes.DeadlineExceeded {
		t.Fatalf("an unfinished request ended with %v after %v, want the server to cancel it", err, took)
	}
	if took > 10*time.Second {
		t.Fatalf("cancelled after %v, want about the 1 s RequestTimeout", took)
	}
	// A normal call still works, and a slow handler is not bounded by it.
	if _, err := e.client.SigningKeys(ctx); err != nil {
		t.Fatal(err)
	}
}
