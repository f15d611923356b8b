package hostd

import (
	"context"
	"os"
	"strings"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Serve makes a root-only socket, serves the API on it, refuses a second
// service on the same state directory and removes the socket when done.
func TestServeSocket(t *testing.T) {
	state := t.TempDir()
	s, err := New(Config{StateDir: state, TPM: simTPM(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, s, ServeOptions{}, func(p string) { ready <- p }) }()
	var socket string
	select {
	case socket = <-ready:
	case err := <-served:
		t.Fatal(err)
	}
	if socket != DefaultSocket(state) {
		t.Errorf("socket %s, want %s", socket, DefaultSocket(state))
	}
	st, err := os.Stat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", st.Mode().Perm())
	}
	c, err := Dial(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ListSandboxes(ctx, &bulwarkv1.ListSandboxesRequest{All: true}); err != nil {
		t.Fatal(err)
	}
	// A request that fails validation never reaches a launch.
	stream, err := c.Run(ctx, &bulwarkv1.RunRequest{Policy: "p", Image: "relative"})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "image:") {
		t.Errorf("bad Run: %v, want InvalidArgument naming image", err)
	}
	// A second service on the same state directory is refused.
	s2, err := New(Config{StateDir: state, TPM: s.cfg.TPM})
	if err != nil {
		t.Fatal(err)
	}
	if err := Serve(context.Background(), s2, ServeOptions{}, nil); err == nil || !strings.Contains(err.Error(), "another launcher daemon") {
		t.Errorf("second Serve: %v", err)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(socket); err == nil {
		t.Error("the socket is left behind")
	}
	if _, err := Dial(socket); err == nil || !strings.Contains(err.Error(), "launcher daemon") {
		t.Errorf("Dial without a service: %v", err)
	}
}
