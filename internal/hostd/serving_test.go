package hostd

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"google.golang.org/grpc"
)

// serveService serves a new host service (state in a temporary
// directory, a simulated TPM) on its socket until the test ends, and
// returns a client of it.
func serveService(t *testing.T) *Client {
	t.Helper()
	s, err := New(Config{StateDir: t.TempDir(), TPM: simTPM(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, s, ServeOptions{}, func(p string) { ready <- p }) }()
	t.Cleanup(func() { cancel(); <-served })
	var socket string
	select {
	case socket = <-ready:
	case err := <-served:
		t.Fatal(err)
	}
	c, err := Dial(socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// serveProbe serves impl, a partial Host server, on a socket of its own
// until the test ends, and returns a client of it.
func serveProbe(t *testing.T, impl bulwarkv1.HostServer) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	bulwarkv1.RegisterHostServer(srv, impl)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
