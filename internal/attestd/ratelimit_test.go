package attestd

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TestPeerRateLimit: over real gRPC, the calls anyone may make share a
// per-peer token bucket; the (burst+1)th call within the window is
// ResourceExhausted and counted, Attest is not limited, and the limit
// recovers when the injected clock advances.
func TestPeerRateLimit(t *testing.T) {
	const burst = 3
	e := newEnv(t, envOptions{peerRate: 1, peerBurst: burst})
	ctx := context.Background()
	unknown := "sha256:" + strings.Repeat("0", 64)
	calls := []func() error{
		func() error {
			_, err := e.client.Attestation.Challenge(ctx, &bulwarkv1.ChallengeRequest{NodeId: unknown})
			return err
		},
		func() error {
			_, err := e.client.Attestation.Preflight(ctx, &bulwarkv1.PreflightRequest{NodeId: unknown})
			return err
		},
		func() error {
			_, err := e.client.Attestation.ActivateCredential(ctx, &bulwarkv1.ActivateCredentialRequest{NodeId: unknown, Secret: []byte{1}})
			return err
		},
	}
	for i := range burst {
		if err := calls[i%len(calls)](); status.Code(err) == codes.ResourceExhausted {
			t.Fatalf("call %d of a burst of %d: %v", i+1, burst, err)
		}
	}
	enroll := func() error {
		_, err := e.client.Attestation.Enroll(ctx, &bulwarkv1.EnrollRequest{EkPublic: []byte{1}, AkPublic: []byte{1}})
		return err
	}
	for _, call := range append(calls, enroll) {
		wantCode(t, call(), codes.ResourceExhausted, "rate limit", "--peer-rate")
	}
	// Attest is not limited (it needs a nonce from Challenge).
	_, err := e.client.Attestation.Attest(ctx, &bulwarkv1.AttestRequest{NodeId: unknown})
	if status.Code(err) == codes.ResourceExhausted {
		t.Fatalf("Attest limited: %v", err)
	}
	var m dto.Metric
	if err := e.srv.metrics.RateLimited.WithLabelValues(bulwarkv1.Attestation_Enroll_FullMethodName).Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("rate_limited_total{Enroll} = %v (%v), want 1", m.GetCounter().GetValue(), err)
	}
	e.clock.Advance(time.Second)
	if err := calls[0](); status.Code(err) != codes.NotFound {
		t.Fatalf("after a second: %v, want NotFound from the handler", err)
	}
	wantCode(t, calls[0](), codes.ResourceExhausted)
	e.clock.Advance(burst * time.Second)
	for i := range burst {
		if err := calls[0](); status.Code(err) != codes.NotFound {
			t.Fatalf("call %d after the bucket refilled: %v", i+1, err)
		}
	}
}

// TestPeerLimiter: buckets are per peer key, refill with the clock up to
// the burst, a clock going back refills nothing, and the number of
// buckets stays bounded.
func TestPeerLimiter(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		name  string
		steps []struct {
			key  string
			at   time.Duration
			want bool
		}
	}{
		{"burst then refused, then refilled", []struct {
			key  string
			at   time.Duration
			want bool
		}{{"a", 0, true}, {"a", 0, true}, {"a", 0, false}, {"a", 499 * time.Millisecond, false}, {"a", 500 * time.Millisecond, true}, {"a", 500 * time.Millisecond, false}}},
		{"peers are separate", []struct {
			key  string
			at   time.Duration
			want bool
		}{{"a", 0, true}, {"a", 0, true}, {"a", 0, false}, {"b", 0, true}, {"b", 0, true}, {"b", 0, false}}},
		{"refill stops at the burst", []struct {
			key  string
			at   time.Duration
			want bool
		}{{"a", 0, true}, {"a", time.Hour, true}, {"a", time.Hour, true}, {"a", time.Hour, false}}},
		{"a clock going back refills nothing", []struct {
			key  string
			at   time.Duration
			want bool
		}{{"a", time.Second, true}, {"a", time.Second, true}, {"a", 0, false}, {"a", time.Second, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newPeerLimiter(2, 2) // 2 a second, burst 2
			for i, s := range tc.steps {
				if got := l.allow(s.key, t0.Add(s.at)); got != s.want {
					t.Fatalf("step %d (%s at %v): %v, want %v", i, s.key, s.at, got, s.want)
				}
			}
		})
	}
	t.Run("bounded", func(t *testing.T) {
		l := newPeerLimiter(1, 1)
		l.max = 100
		for i := range 1000 {
			l.allow(fmt.Sprint(i), t0)
			if len(l.peers) > l.max {
				t.Fatalf("%d buckets, the bound is %d", len(l.peers), l.max)
			}
		}
	})
	t.Run("off", func(t *testing.T) {
		var l *peerLimiter
		for range 10 {
			if !l.allow("a", t0) {
				t.Fatal("no limiter refused")
			}
		}
	})
}

// TestPeerKey: IPv4 (also mapped into IPv6) by address, IPv6 by /64.
func TestPeerKey(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1234}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::1"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.UnixAddr{Name: "@", Net: "unix"}, "@"},
	} {
		if got := peerKey(peer.NewContext(context.Background(), &peer.Peer{Addr: tc.addr})); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.addr, got, tc.want)
		}
	}
	if got := peerKey(context.Background()); got != "" {
		t.Errorf("no peer: %q", got)
	}
}

// TestRefusalLogsSampled: a flood of unaudited refusals is counted in
// full but logged a few lines at a time, the next line written saying how
// many were left out; an audited refusal is logged and not counted.
func TestRefusalLogsSampled(t *testing.T) {
	var buf bytes.Buffer
	p := newInprocWith(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	s := p.srv
	info := &grpc.UnaryServerInfo{FullMethod: bulwarkv1.Attestation_Attest_FullMethodName}
	refuse := func(ctx context.Context, _ any) (any, error) {
		return nil, status.Error(codes.PermissionDenied, "quote: junk")
	}
	const flood = 500
	buf.Reset()
	for range flood {
		s.unaryInterceptor(context.Background(), nil, info, refuse)
	}
	lines := strings.Count(buf.String(), "msg=rpc")
	if lines != refusalLogBurst {
		t.Fatalf("%d log lines for %d refusals, want %d", lines, flood, refusalLogBurst)
	}
	var m dto.Metric
	if err := s.metrics.UnauditedRefusals.WithLabelValues(info.FullMethod).Write(&m); err != nil || m.GetCounter().GetValue() != flood {
		t.Fatalf("unaudited_refusals_total = %v (%v), want %d", m.GetCounter().GetValue(), err, flood)
	}
	p.clock.Advance(time.Second)
	buf.Reset()
	s.unaryInterceptor(context.Background(), nil, info, refuse)
	if want := fmt.Sprintf("suppressed=%d", flood-refusalLogBurst); !strings.Contains(buf.String(), want) {
		t.Fatalf("the next line does not say %s: %s", want, buf.String())
	}
	// An audited refusal is always logged, and not counted as unaudited.
	buf.Reset()
	audited := func(ctx context.Context, _ any) (any, error) {
		markAudited(ctx)
		return nil, status.Error(codes.PermissionDenied, "launch_log: edited")
	}
	for range 3 * refusalLogBurst {
		s.unaryInterceptor(context.Background(), nil, info, audited)
	}
	if lines := strings.Count(buf.String(), "msg=rpc"); lines != 3*refusalLogBurst {
		t.Fatalf("%d log lines for %d audited refusals", lines, 3*refusalLogBurst)
	}
	if err := s.metrics.UnauditedRefusals.WithLabelValues(info.FullMethod).Write(&m); err != nil || m.GetCounter().GetValue() != flood+1 {
		t.Fatalf("unaudited_refusals_total = %v, want %d", m.GetCounter().GetValue(), flood+1)
	}
}
