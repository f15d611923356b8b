// Package attestclient is the small client of attestd that the launcher, the
// load generator and `attestd ctl` use: a TLS dial (attestd's CA, an
// optional client certificate for the admin API) and typed calls.
package attestclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Message size limits matching attestd's.
const (
	MaxSendSize = 8 << 20
	MaxRecvSize = 80 << 20
)

// Options say how to reach attestd.
type Options struct {
	// Addr is host:port of attestd.
	Addr string
	// CAFile is attestd's CA certificate (PEM; DATA/tls/ca.crt, or the
	// ca.crt written next to an admin certificate). Required unless
	// Insecure. CAPEM may be given instead.
	CAFile string
	CAPEM  []byte
	// CertFile and KeyFile are a client certificate and key (PEM), needed
	// for the Admin service (attestd admin-cert).
	CertFile, KeyFile string
	// ServerName overrides the name checked in the server certificate
	// (default: the host of Addr).
	ServerName string
	// Insecure dials without TLS (attestd --insecure). Never in production.
	Insecure bool
	// DialOptions are appended (tests, load generators).
	DialOptions []grpc.DialOption
}

// Client is a connection to attestd. Safe for concurrent use; Close when
// done.
type Client struct {
	conn        *grpc.ClientConn
	Attestation bulwarkv1.AttestationClient
	Admin       bulwarkv1.AdminClient
	// unary is set once attestd answered ChallengeAttest UNIMPLEMENTED
	// (an older attestd): ChallengeAttest uses the two RPCs from then on.
	unary atomic.Bool
}

// TLSConfig builds the client TLS configuration from o.
func (o Options) TLSConfig() (*tls.Config, error) {
	caPEM := o.CAPEM
	if caPEM == nil {
		if o.CAFile == "" {
			return nil, errors.New("attestclient: no CA certificate: give --ca (attestd's DATA/tls/ca.crt)")
		}
		b, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("attestclient: reading CA: %w", err)
		}
		caPEM = b
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("attestclient: the CA file holds no PEM certificate")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: o.ServerName}
	if o.CertFile != "" || o.KeyFile != "" {
		if o.CertFile == "" || o.KeyFile == "" {
			return nil, errors.New("attestclient: give both a client certificate and its key")
		}
		c, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("attestclient: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}

// Dial creates a client for o.Addr. The connection is made lazily, on the
// first call.
func Dial(o Options) (*Client, error) {
	if o.Addr == "" {
		return nil, errors.New("attestclient: no address")
	}
	e := &edge{o: o}
	var creds credentials.TransportCredentials
	if o.Insecure {
		creds = insecure.NewCredentials()
	} else {
		cfg, err := o.TLSConfig()
		if err != nil {
			return nil, err
		}
		e.tls = cfg
		creds = handshakes{TransportCredentials: credentials.NewTLS(cfg), last: &e.last}
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(e.unary),
		grpc.WithChainStreamInterceptor(e.stream),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxRecvSize), grpc.MaxCallSendMsgSize(MaxSendSize)),
	}, o.DialOptions...)
	conn, err := grpc.NewClient(o.Addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("attestclient: %w", err)
	}
	return &Client{conn: conn, Attestation: bulwarkv1.NewAttestationClient(conn), Admin: bulwarkv1.NewAdminClient(conn)}, nil
}

// Conn is the underlying connection (health checks, reflection).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Enroll sends the EK (and its certificate, if any) and the AK; the answer
// is the credential challenge to activate with the TPM.
func (c *Client) Enroll(ctx context.Context, ekPublic, ekCert, akPublic []byte) (*bulwarkv1.EnrollResponse, error) {
	return c.Attestation.Enroll(ctx, &bulwarkv1.EnrollRequest{EkPublic: ekPublic, EkCertificate: ekCert, AkPublic: akPublic})
}

// Activate answers the credential challenge with the secret the TPM
// recovered.
func (c *Client) Activate(ctx context.Context, nodeID string, secret []byte) error {
	_, err := c.Attestation.ActivateCredential(ctx, &bulwarkv1.ActivateCredentialRequest{NodeId: nodeID, Secret: secret})
	return err
}

// Challenge returns a fresh nonce for the next quote and its expiry.
func (c *Client) Challenge(ctx context.Context, nodeID string) ([]byte, time.Time, error) {
	r, err := c.Attestation.Challenge(ctx, &bulwarkv1.ChallengeRequest{NodeId: nodeID})
	if err != nil {
		return nil, time.Time{}, err
	}
	return r.GetNonce(), r.GetExpiresAt().AsTime(), nil
}

// Preflight asks whether the policy allows a launch's artifacts before
// anything boots. A refusal is a response with reasons, not an error.
func (c *Client) Preflight(ctx context.Context, req *bulwarkv1.PreflightRequest) (*bulwarkv1.PreflightResponse, error) {
	return c.Attestation.Preflight(ctx, req)
}

// Attest sends a quote and the launch log for judgement. A deny is a
// response with Verdict DENY and reasons, not an error.
func (c *Client) Attest(ctx context.Context, req *bulwarkv1.AttestRequest) (*bulwarkv1.AttestResponse, error) {
	return c.Attestation.Attest(ctx, req)
}

// Release fetches the wrapped secrets granted to a passing attestation.
func (c *Client) Release(ctx context.Context, attestationID string) (*bulwarkv1.ReleaseSecretsResponse, error) {
	return c.Attestation.ReleaseSecrets(ctx, &bulwarkv1.ReleaseSecretsRequest{Ref: &bulwarkv1.ReleaseSecretsRequest_AttestationId{AttestationId: attestationID}})
}

// ReleaseWithToken is Release by the attestation token.
func (c *Client) ReleaseWithToken(ctx context.Context, token string) (*bulwarkv1.ReleaseSecretsResponse, error) {
	return c.Attestation.ReleaseSecrets(ctx, &bulwarkv1.ReleaseSecretsRequest{Ref: &bulwarkv1.ReleaseSecretsRequest_Token{Token: token}})
}

// SigningKeys returns the token verification keys.
func (c *Client) SigningKeys(ctx context.Context) (*bulwarkv1.GetSigningKeysResponse, error) {
	return c.Attestation.GetSigningKeys(ctx, &bulwarkv1.GetSigningKeysRequest{})
}

// StepError is an attestd refusal (or a failed call) in one step of
// ChallengeAttest: Step is "challenge" or "attest", Err the gRPC status.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Step + ": " + e.Err.Error() }

// Unwrap returns the step's error (its gRPC status).
func (e *StepError) Unwrap() error { return e.Err }

// ChallengeAttest asks for a nonce (ch) and sends the Attest request build
// makes from the answer, on one ChallengeAttest stream: one call where
// Challenge and Attest are two. A refusal is a *StepError naming the
// step; build's own error is returned as it is, the stream abandoned. An
// attestd without ChallengeAttest (UNIMPLEMENTED) is asked by the two
// RPCs instead, and so is this client from then on.
func (c *Client) ChallengeAttest(ctx context.Context, ch *bulwarkv1.ChallengeRequest, build func(*bulwarkv1.ChallengeResponse) (*bulwarkv1.AttestRequest, error)) (*bulwarkv1.AttestResponse, error) {
	if !c.unary.Load() {
		ar, err := ChallengeAttest(ctx, c.Attestation, ch, build)
		var se *StepError
		if !errors.As(err, &se) || se.Step != "challenge" || status.Code(se.Err) != codes.Unimplemented {
			return ar, err
		}
		c.unary.Store(true)
	}
	return ChallengeThenAttest(ctx, c.Attestation, ch, build)
}

// ChallengeAttest is Client.ChallengeAttest on client, the stream only (no
// fallback): what bulwark-load drives.
func ChallengeAttest(ctx context.Context, client bulwarkv1.AttestationClient, ch *bulwarkv1.ChallengeRequest, build func(*bulwarkv1.ChallengeResponse) (*bulwarkv1.AttestRequest, error)) (*bulwarkv1.AttestResponse, error) {
	ctx, cancel := context.WithCancel(ctx) // ends the stream whatever happens
	defer cancel()
	st, err := client.ChallengeAttest(ctx)
	if err != nil {
		return nil, &StepError{Step: "challenge", Err: err}
	}
	if err := st.Send(&bulwarkv1.ChallengeAttestRequest{Step: &bulwarkv1.ChallengeAttestRequest_Challenge{Challenge: ch}}); err != nil {
		// The stream broke: its status comes with the next Recv.
		_, err = st.Recv()
		return nil, &StepError{Step: "challenge", Err: err}
	}
	m, err := st.Recv()
	if err != nil {
		return nil, &StepError{Step: "challenge", Err: err}
	}
	cr := m.GetChallenge()
	if cr == nil {
		return nil, &StepError{Step: "challenge", Err: errors.New("attestd answered the challenge with another message")}
	}
	req, err := build(cr)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&bulwarkv1.ChallengeAttestRequest{Step: &bulwarkv1.ChallengeAttestRequest_Attest{Attest: req}}); err != nil {
		_, err = st.Recv()
		return nil, &StepError{Step: "attest", Err: err}
	}
	if err := st.CloseSend(); err != nil {
		return nil, &StepError{Step: "attest", Err: err}
	}
	m, err = st.Recv()
	if err != nil {
		return nil, &StepError{Step: "attest", Err: err}
	}
	ar := m.GetAttest()
	if ar == nil {
		return nil, &StepError{Step: "attest", Err: errors.New("attestd answered the attest request with another message")}
	}
	return ar, nil
}

// ChallengeThenAttest is ChallengeAttest by the two unary RPCs, Challenge
// and Attest: for an attestd without the stream, and for comparing the two
// (bulwark-load --two-calls).
func ChallengeThenAttest(ctx context.Context, client bulwarkv1.AttestationClient, ch *bulwarkv1.ChallengeRequest, build func(*bulwarkv1.ChallengeResponse) (*bulwarkv1.AttestRequest, error)) (*bulwarkv1.AttestResponse, error) {
	cr, err := client.Challenge(ctx, ch)
	if err != nil {
		return nil, &StepError{Step: "challenge", Err: err}
	}
	req, err := build(cr)
	if err != nil {
		return nil, err
	}
	ar, err := client.Attest(ctx, req)
	if err != nil {
		return nil, &StepError{Step: "attest", Err: err}
	}
	return ar, nil
}
