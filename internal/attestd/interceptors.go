package attestd

import (
	"context"
	"crypto/x509"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/pki"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// adminServicePrefix is the full-method prefix of the Admin service.
const adminServicePrefix = "/bulwark.v1.Admin/"

// unaryInterceptor is attestd's one interceptor, outermost first: panic
// recovery (a panic is a bug; the caller gets Internal and nothing leaks),
// admin authorisation, the per-peer rate limit on the calls anyone may
// make (ResourceExhausted), metrics and a log line per call (method, code,
// duration, peer; never a request field). Refusals that were not audited
// (the caller proved nothing first) are counted in
// unaudited_refusals_total and their log lines sampled (logSampler), so a
// flood of them costs a few lines a second.
func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	requestArrived(ctx) // gRPC has read the whole request before it calls this
	start := time.Now()
	cs := &callState{}
	ctx = context.WithValue(ctx, callStateKey{}, cs)
	defer func() {
		if r := recover(); r != nil {
			s.metrics.Panics.Inc()
			s.log.Error("panic in handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
		code := status.Code(err)
		d := time.Since(start)
		s.metrics.RPCDuration.WithLabelValues(info.FullMethod, code.String()).Observe(d.Seconds())
		// Successful calls at debug (thousands a second on a busy fleet; each
		// verdict and release has its own info line), refusals at info,
		// server faults at error.
		lvl := slog.LevelDebug
		switch code {
		case codes.OK:
		case codes.Internal, codes.Unknown, codes.DataLoss:
			lvl = slog.LevelError
		default:
			lvl = slog.LevelInfo
		}
		var suppressed uint64
		if lvl == slog.LevelInfo && !cs.audited {
			s.metrics.UnauditedRefusals.WithLabelValues(info.FullMethod).Inc()
			ok, n := s.refusalLogs.admit(info.FullMethod+" "+code.String(), s.now())
			if !ok {
				return
			}
			suppressed = n
		}
		if s.log.Enabled(ctx, lvl) {
			attrs := []slog.Attr{slog.String("method", info.FullMethod), slog.String("code", code.String()),
				slog.Duration("duration", d)}
			if suppressed > 0 {
				attrs = append(attrs, slog.Uint64("suppressed", suppressed))
			}
			if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
				attrs = append(attrs, slog.String("peer", p.Addr.String()))
			}
			if err != nil {
				attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
			}
			s.log.LogAttrs(ctx, lvl, "rpc", attrs...)
		}
	}()
	if strings.HasPrefix(info.FullMethod, adminServicePrefix) {
		who, aerr := s.authorizeAdmin(ctx)
		if aerr != nil {
			return nil, aerr
		}
		ctx = context.WithValue(ctx, adminKey{}, who)
	}
	if unauthenticatedMethods[info.FullMethod] && !s.peers.allow(peerKey(ctx), s.now()) {
		s.metrics.RateLimited.WithLabelValues(info.FullMethod).Inc()
		return nil, status.Errorf(codes.ResourceExhausted,
			"rate limit: more than %g calls a second (burst %d) from this address to Challenge, Enroll, ActivateCredential and Preflight; retry later (attestd serve --peer-rate, --peer-burst)",
			s.peers.rate, int(s.peers.burst))
	}
	return handler(ctx, req)
}

// streamInterceptor guards streaming handlers (health Watch, reflection,
// WatchNode, ChallengeAttest):
// recovery, and admin authorisation should an Admin stream ever exist.
func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	// A stream (health Watch, reflection) reads its messages in its
	// handler, for as long as it lives: only its opening is bounded.
	// ChallengeAttest is bounded by step: it stops the timer itself once
	// each request has arrived (ChallengeAttest).
	if info.FullMethod != bulwarkv1.Attestation_ChallengeAttest_FullMethodName {
		requestArrived(ss.Context())
	}
	defer func() {
		if r := recover(); r != nil {
			s.metrics.Panics.Inc()
			s.log.Error("panic in stream handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	if strings.HasPrefix(info.FullMethod, adminServicePrefix) {
		if _, aerr := s.authorizeAdmin(ss.Context()); aerr != nil {
			return aerr
		}
	}
	return handler(srv, ss)
}

type adminKey struct{}

// adminName returns the CN of the admin certificate of the call ("" if none).
func adminName(ctx context.Context) string {
	s, _ := ctx.Value(adminKey{}).(string)
	return s
}

// authorizeAdmin admits a call only with a client certificate that chains
// to attestd's CA (checked again here, not only by the TLS handshake) and
// carries pki.AdminRoleURI. Everything else is PermissionDenied.
func (s *Server) authorizeAdmin(ctx context.Context) (string, error) {
	if s.adminCA == nil {
		return "", status.Error(codes.PermissionDenied, "admin API: disabled (attestd runs without TLS; admin calls need an admin client certificate)")
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.PermissionDenied, "admin API: no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return "", status.Error(codes.PermissionDenied, "admin API: an admin client certificate is required (attestd admin-cert)")
	}
	leaf := ti.State.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range ti.State.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.adminCA, Intermediates: inter,
		CurrentTime: s.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", status.Error(codes.PermissionDenied, "admin API: client certificate is not issued by this attestd's CA")
	}
	if !pki.HasRole(leaf, pki.AdminRoleURI) {
		return "", status.Errorf(codes.PermissionDenied, "admin API: certificate %q has no admin role", leaf.Subject.CommonName)
	}
	return leaf.Subject.CommonName, nil
}

// arrivalKey holds, in a call's context, the timer that cancels the call
// if its request has not fully arrived by Config.RequestTimeout.
type arrivalKey struct{}

// arrivalDeadline (a tap handle: it runs when a call's headers arrive,
// before gRPC reads the request) gives the call RequestTimeout to send its
// request. gRPC reads a unary request whole before any interceptor runs,
// and that read waits on this context: a peer that opens calls and never
// finishes them would otherwise hold a handler and the bytes sent so far
// (up to MaxRequestSize) each, for as long as the connection lives.
func (s *Server) arrivalDeadline(ctx context.Context, _ *tap.Info) (context.Context, error) {
	ctx, cancel := context.WithCancel(ctx) // released with the call's own context
	t := time.AfterFunc(s.requestTO, cancel)
	return context.WithValue(ctx, arrivalKey{}, t), nil
}

// requestArrived stops the call's arrival timer: what follows (the
// handler, the answer) is not bounded by it.
func requestArrived(ctx context.Context) {
	if t, ok := ctx.Value(arrivalKey{}).(*time.Timer); ok {
		t.Stop()
	}
}
