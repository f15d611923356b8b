package attestclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// EdgeError explains why a call could not reach attestd at all (wrong CA,
// refused client certificate, plaintext against TLS) in words a user can
// act on. It is still a gRPC Unavailable error (GRPCStatus), and unwraps
// to the cause when there is one.
type EdgeError struct {
	Msg string
	Err error
}

func (e *EdgeError) Error() string { return e.Msg }
func (e *EdgeError) Unwrap() error { return e.Err }

// GRPCStatus makes the error an Unavailable status with the explanation.
func (e *EdgeError) GRPCStatus() *status.Status { return status.New(codes.Unavailable, e.Msg) }

// handshakes records the last TLS handshake's outcome, for explaining a
// call that failed Unavailable.
type handshakes struct {
	credentials.TransportCredentials
	last *atomic.Pointer[handshakeResult]
}

type handshakeResult struct{ err error }

func (h handshakes) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := h.TransportCredentials.ClientHandshake(ctx, authority, raw)
	h.last.Store(&handshakeResult{err: err})
	return conn, info, err
}

func (h handshakes) Clone() credentials.TransportCredentials {
	return handshakes{TransportCredentials: h.TransportCredentials.Clone(), last: h.last}
}

// edge explains connection failures for one Client.
type edge struct {
	o    Options
	tls  *tls.Config // nil when Insecure
	last atomic.Pointer[handshakeResult]
}

func (e *edge) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return e.explain(ctx, invoker(ctx, method, req, reply, cc, opts...))
}

func (e *edge) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	return s, e.explain(ctx, err)
}

// explain turns an Unavailable error whose cause it can tell into an
// EdgeError, and returns any other error as it is.
func (e *edge) explain(ctx context.Context, err error) error {
	if status.Code(err) != codes.Unavailable {
		return err
	}
	if e.tls == nil {
		// Plaintext HTTP/2 to a TLS server: the server drops the
		// connection without a word ("error reading server preface:
		// EOF"). Ask the server whether it speaks TLS (only then: not
		// for attestd's own Unavailable answers, e.g. a store down).
		msg := status.Convert(err).Message()
		if !strings.Contains(msg, "preface") && !strings.Contains(msg, "EOF") && !strings.Contains(msg, "connection") {
			return err
		}
		if speaksTLS(ctx, e.o.Addr) {
			return &EdgeError{Msg: fmt.Sprintf("attestd at %s speaks TLS, and this client dialled it in plaintext: drop --insecure and give --ca (attestd's DATA/tls/ca.crt)", e.o.Addr), Err: err}
		}
		return err
	}
	r := e.last.Load()
	if r == nil {
		return err
	}
	if r.err != nil {
		if m := e.explainHandshake(r.err); m != "" {
			return &EdgeError{Msg: m, Err: r.err}
		}
		return err
	}
	// The server's certificate verified, so --ca is attestd's CA. Under
	// TLS 1.3 the server judges our certificate after our side of the
	// handshake is done: its refusal arrives as a dropped connection
	// (broken pipe, EOF, or the alert, by timing). Check the certificate
	// against that CA here to say why.
	if len(e.tls.Certificates) > 0 {
		if m, cause := e.explainClientCert(); m != "" {
			return &EdgeError{Msg: m, Err: cause}
		}
	}
	return err
}

func (e *edge) caName() string {
	if e.o.CAFile != "" {
		return e.o.CAFile
	}
	return "the given CA certificate"
}

// explainHandshake words a failed TLS handshake, or returns "".
func (e *edge) explainHandshake(err error) string {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var rh tls.RecordHeaderError
	switch {
	case errors.As(err, &ua):
		return fmt.Sprintf("attestd's server certificate at %s is not signed by the CA in %s: give --ca attestd's own CA, DATA/tls/ca.crt in its data directory (or the ca.crt written beside an admin certificate)", e.o.Addr, e.caName())
	case errors.As(err, &he):
		return fmt.Sprintf("attestd's server certificate at %s is not valid for the name %q (%v): use the name it was issued for with --server-name, or restart attestd with --tls-san %s", e.o.Addr, he.Host, he, he.Host)
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return fmt.Sprintf("attestd's server certificate at %s has expired (%v): restart attestd to renew it", e.o.Addr, ci)
	case errors.As(err, &rh):
		return fmt.Sprintf("%s does not speak TLS (is it an attestd started with --insecure, or another service?): %v", e.o.Addr, err)
	}
	return ""
}

// explainClientCert checks our client certificate against attestd's CA.
func (e *edge) explainClientCert() (string, error) {
	c := e.tls.Certificates[0]
	leaf := c.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return "", nil
		}
	}
	inter := x509.NewCertPool()
	for _, der := range c.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(ic)
		}
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: e.tls.RootCAs, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	switch {
	case err == nil:
		return "", nil
	case errors.As(err, &ua):
		return fmt.Sprintf("attestd refused the client certificate %s: it is not issued by attestd's CA (%s); make one with 'attestd admin-cert --data DATA --name NAME -o DIR' on the attestd host", e.o.CertFile, e.caName()), err
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return fmt.Sprintf("attestd refused the client certificate %s: it has expired (%v); make a new one with 'attestd admin-cert --force'", e.o.CertFile, ci), err
	}
	return fmt.Sprintf("attestd refused the client certificate %s: %v", e.o.CertFile, err), err
}

// speaksTLS reports whether addr completes a TLS handshake (the
// certificate is not checked: only the protocol matters here).
func speaksTLS(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} //nolint:gosec // probe of the protocol only; nothing is sent
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}
