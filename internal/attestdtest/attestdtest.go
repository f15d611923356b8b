// Package attestdtest runs a real attestd ("attestd serve", in process, on
// a loopback port the kernel picks) for the tests of the commands that talk
// to it: the launcher, attestd ctl, the load generator.
package attestdtest

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/bulwark-project/bulwark/internal/attestdcmd"
	"github.com/bulwark-project/bulwark/internal/cli"
)

// Server is a running attestd.
type Server struct {
	Addr string // host:port it serves gRPC on
	Data string // its data directory (DATA/tls/ca.crt is its CA)
	out  *lineWriter
}

// CA is the path of the server's CA certificate (absent with --insecure).
func (s *Server) CA() string { return filepath.Join(s.Data, "tls", "ca.crt") }

// Output is what attestd printed so far.
func (s *Server) Output() string { return s.out.String() }

// Start runs "attestd serve" with a fresh data directory, a loopback port,
// no metrics endpoint and the development file vault, plus extra flags, and
// returns once it serves. It stops when the test ends.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	args := append([]string{"serve", "--data", data, "--listen", "127.0.0.1:0", "--metrics-addr", "",
		"--vault", "file", "--allow-insecure-file-vault", "--log-level", "error"}, extra...)
	w := &lineWriter{ready: make(chan string, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- attestdcmd.Program.Main(ctx, &cli.Env{Stdout: w, Stderr: w, Stdin: strings.NewReader(""),
			Getenv: func(string) string { return "" }}, args)
	}()
	s := &Server{Data: data, out: w}
	select {
	case s.Addr = <-w.ready:
	case code := <-done:
		cancel()
		t.Fatalf("attestd serve exited %d before serving:\n%s", code, w.String())
	}
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("attestd serve exited %d:\n%s", code, w.String())
		}
	})
	return s
}

var servingRE = regexp.MustCompile(`attestd: serving on (\S+)\n`)

// lineWriter collects output and reports the serving address once.
type lineWriter struct {
	mu    sync.Mutex
	b     bytes.Buffer
	ready chan string
	sent  bool
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if !w.sent {
		if m := servingRE.FindSubmatch(w.b.Bytes()); m != nil {
			w.sent = true
			w.ready <- string(m[1])
		}
	}
	return len(p), nil
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
