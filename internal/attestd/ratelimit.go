package attestd

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"google.golang.org/grpc/peer"
)

// Defaults of the per-peer rate limit on the calls anyone may make
// (Config.PeerRate, Config.PeerBurst). One host makes a few of these per
// launch; a hundred a second leaves room for many hosts behind one NAT
// address. A load generator that drives thousands of simulated hosts from
// one address needs the limit raised or off (attestd serve --peer-rate 0).
const (
	DefaultPeerRate  = 100 // calls a second, per peer address
	DefaultPeerBurst = 200
	// maxPeerBuckets bounds the limiter's memory: past it, buckets that
	// are full again (their peer idle) are dropped, then arbitrary ones.
	maxPeerBuckets = 1 << 16
)

// unauthenticatedMethods are the calls anyone who can reach attestd may
// make, before proving anything: they are rate limited per peer. (Attest
// needs a nonce from Challenge and ReleaseSecrets an attestation, so they
// are bounded through these; Admin calls need an admin certificate.)
var unauthenticatedMethods = map[string]bool{
	bulwarkv1.Attestation_Challenge_FullMethodName:          true,
	bulwarkv1.Attestation_Enroll_FullMethodName:             true,
	bulwarkv1.Attestation_ActivateCredential_FullMethodName: true,
	bulwarkv1.Attestation_Preflight_FullMethodName:          true,
}

// bucket is a token bucket: it holds up to burst tokens and gains rate
// tokens a second; a call takes one.
type bucket struct {
	tokens float64
	last   time.Time
}

// take refills the bucket for the time since its last call and takes a
// token if there is one. A clock that goes back refills nothing.
func (b *bucket) take(now time.Time, rate, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens = min(burst, b.tokens+d.Seconds()*rate)
	}
	if now.After(b.last) {
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// full says whether the bucket would be full at now (its peer idle long
// enough): dropping it then changes nothing.
func (b *bucket) full(now time.Time, rate, burst float64) bool {
	return b.tokens+now.Sub(b.last).Seconds()*rate >= burst
}

// peerLimiter is a token bucket per peer address. It is safe for
// concurrent use. The zero rate admits everything.
type peerLimiter struct {
	rate, burst float64
	max         int

	mu    sync.Mutex
	peers map[string]*bucket
}

func newPeerLimiter(rate float64, burst int) *peerLimiter {
	return &peerLimiter{rate: rate, burst: float64(burst), max: maxPeerBuckets, peers: map[string]*bucket{}}
}

// allow takes a token from key's bucket at now.
func (l *peerLimiter) allow(key string, now time.Time) bool {
	if l == nil || l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.peers[key]
	if !ok {
		if len(l.peers) >= l.max {
			l.evict(now)
		}
		b = &bucket{}
		l.peers[key] = b
	}
	return b.take(now, l.rate, l.burst)
}

// evict drops the buckets of idle peers and, if that is not enough (a
// flood from many addresses), arbitrary ones down to three quarters of
// the maximum, so that the next sweep is max/4 new peers away.
func (l *peerLimiter) evict(now time.Time) {
	for k, b := range l.peers {
		if b.full(now, l.rate, l.burst) {
			delete(l.peers, k)
		}
	}
	for k := range l.peers {
		if len(l.peers) <= l.max*3/4 {
			break
		}
		delete(l.peers, k)
	}
}

// peerKey is the rate-limit key of a call's peer: its IP address, an IPv6
// one by its /64 (what one host or site is usually given); "" when the
// call has no peer (an in-process call).
func peerKey(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	return addrKey(p.Addr)
}

// addrKey is the peer key of a remote address (see peerKey); the
// connection limit (connlimit.go) counts by it too.
func addrKey(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			ip = ip.Unmap()
			if ip.Is6() {
				pfx, _ := ip.Prefix(64)
				return pfx.String()
			}
			return ip.String()
		}
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

// Refusal log lines are sampled per method and code: a burst of
// refusalLogBurst lines, then refusalLogRate a second. A flood of refusals
// then costs a few log lines a second, each saying how many were left out.
const (
	refusalLogRate  = 1
	refusalLogBurst = 10
)

// logSampler limits log lines per key (see refusalLogRate). It is safe for
// concurrent use; its keys are method and code, a bounded set.
type logSampler struct {
	mu   sync.Mutex
	keys map[string]*sampled
}

type sampled struct {
	b          bucket
	suppressed uint64
}

// admit says whether a line for key may be written at now and, if so, how
// many were left out since the last one written.
func (l *logSampler) admit(key string, now time.Time) (ok bool, suppressed uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = map[string]*sampled{}
	}
	s, found := l.keys[key]
	if !found {
		s = &sampled{}
		l.keys[key] = s
	}
	if !s.b.take(now, refusalLogRate, refusalLogBurst) {
		s.suppressed++
		return false, 0
	}
	n := s.suppressed
	s.suppressed = 0
	return true, n
}

// callState is what a handler tells the interceptor about its call.
type callState struct {
	audited bool // a refusal was written to the audit log
}

type callStateKey struct{}

// markAudited notes that the call's refusal was written to the audit log:
// the caller had proven something first, and the refusal is not counted
// or sampled as an unaudited one.
func markAudited(ctx context.Context) {
	if c, ok := ctx.Value(callStateKey{}).(*callState); ok {
		c.audited = true
	}
}
