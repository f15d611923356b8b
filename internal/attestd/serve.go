package attestd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// ServeOptions say where and how to serve.
type ServeOptions struct {
	// Listen is the gRPC address, e.g. ":8443".
	Listen string
	// TLS is the server's TLS configuration (see ServerTLSConfig). nil
	// serves plaintext — only for --insecure, and the Admin service then
	// refuses everything.
	TLS *tls.Config
	// MetricsAddr serves /metrics, /healthz and /.well-known/jwks.json over
	// HTTP; "" disables it.
	MetricsAddr string
	// Pprof also serves Go's profiler (/debug/pprof/) on MetricsAddr: CPU,
	// heap, goroutine and execution-trace profiles for performance work.
	// Off by default; the metrics address is loopback unless set otherwise.
	Pprof bool
	// Ready, when set, is called with the bound addresses once serving.
	Ready func(grpcAddr, metricsAddr net.Addr)
	// ShutdownGrace bounds the graceful stop; 0: 10 s.
	ShutdownGrace time.Duration
	// MaxConns caps the gRPC connections open at once, MaxConnsPerPeer
	// those from one peer address (an IPv6 one by its /64). A connection
	// over a cap is closed as soon as it is accepted and counted in
	// bulwark_attestd_connections_refused_total. 0: DefaultMaxConns and
	// DefaultMaxConnsPerPeer; negative: no cap (MaxConns: tests only).
	MaxConns        int
	MaxConnsPerPeer int
}

// ServerTLSConfig is attestd's TLS: TLS 1.3 only, the server certificate,
// and client certificates verified against attestd's CA when presented
// (launchers need none; the Admin service requires one with the admin
// role, which the interceptor checks).
func ServerTLSConfig(cert tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    clientCAs,
	}
}

// Serve runs the gRPC server (Attestation, Admin, health, reflection) and
// the metrics endpoint until ctx is done, then stops gracefully.
func (s *Server) Serve(ctx context.Context, o ServeOptions) error {
	lis, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", o.Listen, err)
	}
	if max := o.MaxConns; max >= 0 {
		if max == 0 {
			max = DefaultMaxConns
		}
		perPeer := o.MaxConnsPerPeer
		if perPeer == 0 {
			perPeer = DefaultMaxConnsPerPeer
		} else if perPeer < 0 {
			perPeer = 0
		}
		lis = limitListen(lis, max, perPeer, s.metrics, s.logConnRefused)
	}
	opts := s.ServerOptions()
	if o.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(o.TLS)))
	}
	g := grpc.NewServer(opts...)
	s.Register(g)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	for _, svc := range []string{"", bulwarkv1.Attestation_ServiceDesc.ServiceName, bulwarkv1.Admin_ServiceDesc.ServiceName} {
		hs.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	}
	reflection.Register(g)

	var hsrv *http.Server
	var mlis net.Listener
	if o.MetricsAddr != "" {
		mlis, err = net.Listen("tcp", o.MetricsAddr)
		if err != nil {
			lis.Close()
			return fmt.Errorf("listen metrics %s: %w", o.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", s.metrics.Handler())
		mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/jwk-set+json")
			w.Write(s.tokens.JWKS())
		})
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
		writeTimeout := 30 * time.Second
		if o.Pprof {
			mux.HandleFunc("GET /debug/pprof/", pprof.Index)
			mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
			mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
			writeTimeout = 0 // a CPU profile or trace streams for as long as asked
		}
		hsrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: writeTimeout, MaxHeaderBytes: 16 << 10}
		go func() {
			if err := hsrv.Serve(mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("metrics server", "error", err)
			}
		}()
	}
	if o.Ready != nil {
		var ma net.Addr
		if mlis != nil {
			ma = mlis.Addr()
		}
		o.Ready(lis.Addr(), ma)
	}
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	hs.Shutdown()
	grace := o.ShutdownGrace
	if grace == 0 {
		grace = 10 * time.Second
	}
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		g.Stop()
	}
	if hsrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		hsrv.Shutdown(sctx)
		cancel()
	}
	if serveErr != nil && !errors.Is(serveErr, grpc.ErrServerStopped) {
		return fmt.Errorf("grpc serve: %w", serveErr)
	}
	return nil
}

// logConnRefused logs a connection the limits refused, sampled like call
// refusals: a flood costs a few lines a second.
func (s *Server) logConnRefused(reason, peer string) {
	ok, suppressed := s.refusalLogs.admit("connection "+reason, s.now())
	if !ok {
		return
	}
	s.log.Warn("connection refused", "reason", reason, "peer", peer, "suppressed", suppressed)
}
