package attestd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"

	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
)

// dialFrom dials addr from the loopback address local (Linux routes all of
// 127.0.0.0/8 to lo, so each is a peer address of its own).
func dialFrom(ctx context.Context, local, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	return d.DialContext(ctx, "tcp", addr)
}

// refusedAtAccept reports whether the server closed c without a word: a
// read ends (reset or EOF) instead of waiting for the client's TLS hello.
// wait bounds it; an admitted connection is never read from here.
func refusedAtAccept(t *testing.T, c net.Conn, wait time.Duration) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

// h2Preface is an HTTP/2 client's connection preface and an empty
// SETTINGS frame: after it, gRPC holds the connection as an idle HTTP/2
// connection (no handshake deadline left).
var h2Preface = append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)

// metricValue is a counter's or gauge's value.
func metricValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Gauge != nil {
		return m.GetGauge().GetValue()
	}
	return m.GetCounter().GetValue()
}

// TestConnLimitPerPeer floods attestd (real TLS, loopback) from one peer
// address with more connections than --max-conns-per-peer: the connections
// within the cap complete TLS handshakes and stay open idle, the extra
// ones are closed at accept and counted, and a host on another address
// still enrolls and gets a Challenge answered during the flood.
func TestConnLimitPerPeer(t *testing.T) {
	const perPeer, extra = 4, 3
	tp, err := softtpm.New(softtpm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ek, _ := verify.ParseEKPublic(tp.EKPublic())
	node := limits.NodeID(ek.Raw)
	e := newEnv(t, envOptions{storeKind: "embedded", ekAllow: []string{node}, maxConnsPerPeer: perPeer})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	refused := func() float64 { return metricValue(t, e.srv.metrics.ConnsRefused.WithLabelValues(refusedPerPeer)) }
	if got := refused(); got != 0 {
		t.Fatalf("refused before the flood: %v", got)
	}

	// The flood, from 127.0.0.3: perPeer connections, then extra more.
	ca, err := os.ReadFile(e.pki.CACertPath())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for i := 0; i < perPeer+extra; i++ {
		c, err := dialFrom(ctx, "127.0.0.3", e.addr)
		if i >= perPeer && errors.Is(err, syscall.ECONNRESET) {
			continue // refused before connect returned
		}
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		flood = append(flood, c)
	}
	// The first perPeer were admitted: each completes a TLS handshake and
	// the HTTP/2 preface, then sits idle (what took attestd's memory).
	for i, c := range flood[:perPeer] {
		tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"h2"}})
		if err := tc.HandshakeContext(ctx); err != nil {
			t.Fatalf("flood connection %d within the cap: TLS handshake: %v", i, err)
		}
		if _, err := tc.Write(h2Preface); err != nil {
			t.Fatalf("flood connection %d within the cap: HTTP/2 preface: %v", i, err)
		}
		flood[i] = tc
	}
	// The extra ones were closed at accept.
	for i, c := range flood[perPeer:] {
		if !refusedAtAccept(t, c, 30*time.Second) {
			t.Fatalf("flood connection %d over the per-peer cap of %d was not closed at accept", perPeer+i, perPeer)
		}
	}
	if got := refused(); got != extra {
		t.Fatalf("connections_refused_total{reason=%q} = %v, want %d", refusedPerPeer, got, extra)
	}

	// A host on another address is served during the flood.
	c, err := attestclient.Dial(attestclient.Options{Addr: e.addr, CAFile: e.pki.CACertPath(), ServerName: "localhost",
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dialFrom(ctx, "127.0.0.2", addr)
		})}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	enr, err := c.Enroll(ctx, tp.EKPublic(), nil, tp.AKPublic())
	if err != nil {
		t.Fatalf("Enroll from another address during the flood: %v", err)
	}
	secret, err := tp.ActivateCredential(enr.GetCredentialBlob(), enr.GetEncryptedSecret())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Activate(ctx, node, secret); err != nil {
		t.Fatalf("ActivateCredential during the flood: %v", err)
	}
	if nonce, _, err := c.Challenge(ctx, node); err != nil || len(nonce) == 0 {
		t.Fatalf("Challenge from another address during the flood: %v", err)
	}

	// The flooder's next connection is still refused; once one of its
	// connections closes, it may open one again.
	more, err := dialFrom(ctx, "127.0.0.3", e.addr)
	if err == nil {
		flood = append(flood, more)
		if !refusedAtAccept(t, more, 30*time.Second) {
			t.Fatal("a further flood connection was not closed at accept")
		}
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	if got := refused(); got != extra+1 {
		t.Fatalf("connections_refused_total{reason=%q} = %v, want %d", refusedPerPeer, got, extra+1)
	}
	if got := metricValue(t, e.srv.metrics.ConnsRefused.WithLabelValues(refusedMaxConns)); got != 0 {
		t.Fatalf("connections_refused_total{reason=%q} = %v, want 0", refusedMaxConns, got)
	}
}

// TestConnLimitListener drives the listener wrapper directly: the
// per-peer and total caps, the refusal reasons, the open-connections
// gauge, and a connection closed twice giving its slot back once.
func TestConnLimitListener(t *testing.T) {
	m := NewMetrics()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ll := limitListen(lis, 3, 2, m, nil)
	defer ll.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	dial := func(local string) net.Conn {
		t.Helper()
		c, err := dialFrom(ctx, local, lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		return c
	}
	accept := func() net.Conn {
		t.Helper()
		c, err := ll.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	check := func(step string, perPeer, total, open float64) {
		t.Helper()
		got := []float64{metricValue(t, m.ConnsRefused.WithLabelValues(refusedPerPeer)),
			metricValue(t, m.ConnsRefused.WithLabelValues(refusedMaxConns)), metricValue(t, m.ConnsOpen)}
		if got[0] != perPeer || got[1] != total || got[2] != open {
			t.Fatalf("%s: refused per peer %v, refused total %v, open %v; want %v, %v, %v", step, got[0], got[1], got[2], perPeer, total, open)
		}
	}
	dial("127.0.0.3")
	a := accept()
	dial("127.0.0.3")
	accept()
	check("two from one peer", 0, 0, 2)
	c := dial("127.0.0.3") // over the per-peer cap
	dial("127.0.0.2")
	if got := accept().RemoteAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.2" {
		t.Fatalf("accepted %s, want the other peer's connection", got)
	}
	check("a third from that peer", 1, 0, 3)
	if !refusedAtAccept(t, c, 30*time.Second) {
		t.Fatal("the connection over the per-peer cap is open")
	}
	e := dial("127.0.0.4") // over the total cap
	next := make(chan net.Conn, 1)
	go func() {
		c, _ := ll.Accept() // refuses e, then waits for f
		next <- c
	}()
	if !refusedAtAccept(t, e, 30*time.Second) {
		t.Fatal("the connection over the total cap is open")
	}
	check("one over the total cap", 1, 1, 3)
	a.Close()
	a.Close() // gives its slot back once
	check("one closed twice", 1, 1, 2)
	dial("127.0.0.4")
	f := <-next
	if f == nil || f.RemoteAddr().(*net.TCPAddr).IP.String() != "127.0.0.4" {
		t.Fatalf("accepted %v, want 127.0.0.4's second connection", f)
	}
	check("one in the closed one's place", 1, 1, 3)
}

// TestIdleConnectionClosed: an idle HTTP/2 connection (TLS and preface,
// then nothing) is closed by attestd after Config.IdleTimeout, giving its
// slot and descriptor back.
func TestIdleConnectionClosed(t *testing.T) {
	e := newEnv(t, envOptions{storeKind: "embedded", idleTimeout: 50 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ca, err := os.ReadFile(e.pki.CACertPath())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	raw, err := dialFrom(ctx, "127.0.0.3", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := tls.Client(raw, &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{"h2"}})
	if err := c.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(h2Preface); err != nil {
		t.Fatal(err)
	}
	// Read the server's frames (SETTINGS, ...) until its GOAWAY; the
	// deadline only bounds a failing test.
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := 0; i < 1000; i++ {
		var hdr [9]byte // length (24 bits), type, flags, stream
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("an idle connection was still open 30 s after an idle timeout of 50 ms")
			}
			return // closed without a GOAWAY: closed all the same
		}
		if hdr[3] == 0x7 { // GOAWAY
			return
		}
		n := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		if _, err := io.CopyN(io.Discard, c, int64(n)); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("1000 frames and no GOAWAY on an idle connection")
}
