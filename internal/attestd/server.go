// Package attestd is Bulwark's attestation and key-release server: host
// enrollment (EK/AK with a MakeCredential challenge), single-use nonces,
// verification of TPM quotes and launch event logs, policy evaluation,
// signed verdicts (ES256 JWTs), release of vault secrets wrapped to the
// attested guest's key, and the admin API — over gRPC with TLS, health,
// reflection and Prometheus metrics.
//
// The verification pipeline is Server.VerifyAttestation; its doc comment
// lists every check in order. Store and policy errors become gRPC status
// codes only in this package (see codes.go).
package attestd

import (
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/enclave"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/bulwark-project/bulwark/token"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

var defaultRand io.Reader = rand.Reader

// Defaults for Config's durations.
const (
	DefaultNonceTTL     = 60 * time.Second
	DefaultChallengeTTL = 5 * time.Minute
	DefaultTokenTTL     = 5 * time.Minute
	// DefaultRequestTimeout is how long a client has to send a whole
	// request (see Config.RequestTimeout).
	DefaultRequestTimeout = 30 * time.Second
	// DefaultWatchPoll is Config.WatchPoll's default.
	DefaultWatchPoll = 5 * time.Second
)

// Config is what a Server is built from. Store, Vault, Policies and Tokens
// are required.
type Config struct {
	Logger   *slog.Logger // nil: discard
	Store    store.Store
	Vault    *enclave.Vault
	Policies *policy.Watcher // the policy directory in force, reloading
	Tokens   *token.Signer
	Metrics  *Metrics // nil: a fresh registry
	// Checkpoints, when set, anchor the audit log: VerifyAudit checks the
	// chain against them and records the verified head.
	Checkpoints *Checkpoints

	// EKRoots verifies EK certificates. EKAllow lists node ids
	// ("sha256:<hex>") or bare hex EK fingerprints admitted without a
	// certificate. With neither, Enroll refuses everything.
	EKRoots         *x509.CertPool
	EKIntermediates *x509.CertPool
	EKAllow         []string

	// AdminCA verifies admin client certificates (attestd's CA). nil
	// disables the Admin service (every call is PermissionDenied).
	AdminCA *x509.CertPool

	LaunchPCR    uint32        // 0: limits.DefaultLaunchPCR (PCR 0 cannot be the launch PCR)
	NonceTTL     time.Duration // 0: DefaultNonceTTL
	ChallengeTTL time.Duration // 0: DefaultChallengeTTL
	TokenTTL     time.Duration // token validity and release window; 0: DefaultTokenTTL
	// RequestTimeout bounds the time from a call's headers to the end of
	// its request message; a call still arriving then is cancelled (0:
	// DefaultRequestTimeout). Without it a peer could open streams and
	// never finish them, holding a handler and up to MaxRequestSize each.
	// The handler's own work is not bounded by it.
	RequestTimeout time.Duration
	// PeerRate and PeerBurst limit, per peer address (an IPv6 one by its
	// /64), the calls anyone may make before proving anything: Challenge,
	// Enroll, ActivateCredential and Preflight share a token bucket of
	// PeerBurst calls refilled at PeerRate a second, and a call beyond it
	// is ResourceExhausted. 0: DefaultPeerRate and DefaultPeerBurst; a
	// negative PeerRate: no limit.
	PeerRate  float64
	PeerBurst int
	// WatchPoll is how often a WatchNode stream reads the node's decisions
	// from the store even when this replica made none (another replica
	// of a shared store may have; 0: DefaultWatchPoll). Decisions this
	// replica makes are sent at once.
	WatchPoll time.Duration
	// IdleTimeout closes a connection that has had no call for this long
	// (gRPC's MaxConnectionIdle; 0: DefaultIdleTimeout). A connection
	// costs a file descriptor and memory while it stays open.
	IdleTimeout time.Duration

	Now  func() time.Time // nil: time.Now
	Rand io.Reader        // nil: crypto/rand
}

// Server implements the Attestation and Admin services. It is safe for
// concurrent use.
type Server struct {
	bulwarkv1.UnimplementedAttestationServer
	admin adminServer

	log      *slog.Logger
	st       store.Store
	vault    *enclave.Vault
	policies *policy.Watcher
	tokens   *token.Signer
	metrics  *Metrics
	ekRoots  *x509.CertPool
	ekInter  *x509.CertPool
	ekAllow  map[string]bool
	adminCA  *x509.CertPool
	cps      *Checkpoints

	launchPCR    uint32
	nonceTTL     time.Duration
	challengeTTL time.Duration
	tokenTTL     time.Duration
	requestTO    time.Duration
	idleTimeout  time.Duration
	peers        *peerLimiter // nil: no limit
	refusalLogs  logSampler
	watchers     hub
	watchPoll    time.Duration
	nowFn        func() time.Time
	rand         io.Reader
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Vault == nil || cfg.Policies == nil || cfg.Tokens == nil {
		return nil, errors.New("attestd: Config needs Store, Vault, Policies and Tokens")
	}
	s := &Server{
		log: cfg.Logger, st: cfg.Store, vault: cfg.Vault, policies: cfg.Policies, tokens: cfg.Tokens,
		metrics: cfg.Metrics, cps: cfg.Checkpoints, ekRoots: cfg.EKRoots, ekInter: cfg.EKIntermediates, adminCA: cfg.AdminCA,
		launchPCR: cfg.LaunchPCR, nonceTTL: cfg.NonceTTL, challengeTTL: cfg.ChallengeTTL, tokenTTL: cfg.TokenTTL, requestTO: cfg.RequestTimeout,
		idleTimeout: cfg.IdleTimeout, watchPoll: cfg.WatchPoll, nowFn: cfg.Now, rand: cfg.Rand, ekAllow: map[string]bool{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.metrics == nil {
		s.metrics = NewMetrics()
	}
	if s.launchPCR == 0 {
		s.launchPCR = limits.DefaultLaunchPCR
	}
	if err := limits.CheckLaunchPCR(int(s.launchPCR)); err != nil {
		return nil, fmt.Errorf("attestd: %w", err)
	}
	if s.nonceTTL == 0 {
		s.nonceTTL = DefaultNonceTTL
	}
	if s.challengeTTL == 0 {
		s.challengeTTL = DefaultChallengeTTL
	}
	if s.tokenTTL == 0 {
		s.tokenTTL = DefaultTokenTTL
	}
	if s.requestTO == 0 {
		s.requestTO = DefaultRequestTimeout
	}
	if s.idleTimeout == 0 {
		s.idleTimeout = DefaultIdleTimeout
	}
	if s.watchPoll == 0 {
		s.watchPoll = DefaultWatchPoll
	}
	if s.watchPoll < 0 || s.nonceTTL < 0 || s.challengeTTL < 0 || s.tokenTTL < 0 || s.requestTO < 0 || s.idleTimeout < 0 {
		return nil, errors.New("attestd: durations must be positive")
	}
	if s.nowFn == nil {
		s.nowFn = time.Now
	}
	switch rate, burst := cfg.PeerRate, cfg.PeerBurst; {
	case math.IsNaN(rate) || math.IsInf(rate, 0):
		return nil, fmt.Errorf("attestd: peer rate %v: want a number of calls a second", rate)
	case rate < 0:
	case burst < 0:
		return nil, fmt.Errorf("attestd: peer burst %d: want a positive number of calls", burst)
	default:
		if rate == 0 {
			rate = DefaultPeerRate
		}
		if burst == 0 {
			burst = DefaultPeerBurst
		}
		s.peers = newPeerLimiter(rate, burst)
	}
	if s.rand == nil {
		s.rand = defaultRand
	}
	for _, a := range cfg.EKAllow {
		id, err := normalizeEKAllow(a)
		if err != nil {
			return nil, err
		}
		s.ekAllow[id] = true
	}
	s.admin.s = s
	s.registerSandboxMetrics()
	return s, nil
}

// Register adds the Attestation and Admin services to g.
func (s *Server) Register(g *grpc.Server) {
	bulwarkv1.RegisterAttestationServer(g, s)
	bulwarkv1.RegisterAdminServer(g, &s.admin)
}

// streamWorkers is how many goroutines serve RPCs without a new goroutine
// each. Attestations wait a few ms for their group commit, so a busy
// attestd has as many in flight as its callers allow (bulwark-load: 64):
// with 16 workers most RPCs overflowed to a fresh goroutine whose stack
// grew (copied) during the quote's ECDSA check, ~5 % of attestd's CPU.
// An idle worker costs its stack (a few KiB).
const streamWorkers = 128

// ServerOptions are the interceptors and limits to build a grpc.Server
// with (besides credentials).
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxRequestSize),
		grpc.MaxSendMsgSize(MaxResponseSize),
		// Bound what one client can hold: the TLS handshake, streams per
		// connection, idle connections, and pings.
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.MaxConcurrentStreams(256),
		grpc.InTapHandle(s.arrivalDeadline),
		// A connection with no call for idleTimeout is closed; one that
		// stops answering pings goes after Time+Timeout. A client may ping
		// at most every 10 s, and only while it has a call open: pings
		// cannot keep an idle connection alive past idleTimeout.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: s.idleTimeout, Time: 2 * time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: false}),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
		// Run handlers on long-lived goroutines: a fresh goroutine per RPC
		// grew its stack (copying it) on every call, ~3% of attestd's CPU
		// under load. gRPC still starts one when all workers are busy.
		grpc.NumStreamWorkers(streamWorkers),
	}
}

// Metrics returns the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Tokens returns the token signer (for the JWKS endpoint).
func (s *Server) Tokens() *token.Signer { return s.tokens }

func (s *Server) now() time.Time { return s.nowFn().UTC() }

func (s *Server) randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.rand, b); err != nil {
		return nil, fmt.Errorf("randomness: %w", err)
	}
	return b, nil
}
