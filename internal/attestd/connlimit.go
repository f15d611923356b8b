package attestd

import (
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of the connection limits (ServeOptions.MaxConns and
// MaxConnsPerPeer, Config.IdleTimeout). Each open connection costs a file
// descriptor and, once HTTP/2 is up, about 85 KB (5,000 idle ones took
// attestd from 48 to 471 MB); past the descriptor limit nothing can be
// accepted or opened, /metrics and the policy watcher included. The
// per-peer cap leaves room for many hosts behind one NAT address and for
// the load generator (internal/load: at most 65 connections from one
// address); behind a layer-4 load balancer that hides client addresses,
// every connection comes from the balancer: raise it or turn it off.
const (
	DefaultMaxConns        = 10000
	DefaultMaxConnsPerPeer = 1000
	// DefaultIdleTimeout closes a connection with no call for this long.
	DefaultIdleTimeout = 5 * time.Minute
)

// Reasons a connection was refused at accept
// (bulwark_attestd_connections_refused_total{reason}).
const (
	refusedMaxConns = "max_conns"
	refusedPerPeer  = "max_conns_per_peer"
)

// connLimiter counts open connections, in all and per peer key (addrKey:
// an IP address, an IPv6 one by its /64). It is safe for concurrent use.
type connLimiter struct {
	max, perPeer int // perPeer 0: no per-peer cap
	refused      *prometheus.CounterVec
	open         prometheus.Gauge
	onRefuse     func(reason, peer string) // nil: nothing

	mu    sync.Mutex
	total int
	peers map[string]int
}

// acquire counts a new connection from key, or says why it may not open
// ("" when it may).
func (l *connLimiter) acquire(key string) (refused string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total >= l.max:
		return refusedMaxConns
	case l.perPeer > 0 && l.peers[key] >= l.perPeer:
		return refusedPerPeer
	}
	l.total++
	l.peers[key]++
	l.open.Inc()
	return ""
}

// release uncounts a connection acquire admitted.
func (l *connLimiter) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.peers[key]--; l.peers[key] <= 0 {
		delete(l.peers, key)
	}
	l.open.Dec()
}

// limitListener closes, as soon as they are accepted, the connections
// connLimiter refuses; the others count until closed.
type limitListener struct {
	net.Listener
	l *connLimiter
}

// limitListen wraps lis with the connection limits (max > 0; perPeer 0:
// no per-peer cap), counting in m.
func limitListen(lis net.Listener, max, perPeer int, m *Metrics, onRefuse func(reason, peer string)) net.Listener {
	return &limitListener{Listener: lis, l: &connLimiter{max: max, perPeer: perPeer, refused: m.ConnsRefused, open: m.ConnsOpen,
		onRefuse: onRefuse, peers: map[string]int{}}}
}

// Accept returns the next connection within the limits. Refused ones are
// reset (no TIME_WAIT left behind) and counted; the loop ends when the
// listener does.
func (ll *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := addrKey(c.RemoteAddr())
		if reason := ll.l.acquire(key); reason != "" {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			ll.l.refused.WithLabelValues(reason).Inc() // before the peer can see the reset
			c.Close()
			if ll.l.onRefuse != nil {
				ll.l.onRefuse(reason, key)
			}
			continue
		}
		return &limitedConn{Conn: c, l: ll.l, key: key}, nil
	}
}

// limitedConn gives its slot back on the first Close.
type limitedConn struct {
	net.Conn
	l    *connLimiter
	key  string
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key) })
	return err
}
