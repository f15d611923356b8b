package load

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

// Defaults for Config.
const (
	DefaultHosts          = 1000
	DefaultDuration       = 30 * time.Second
	DefaultConcurrency    = 32
	DefaultConns          = 2
	DefaultPolicy         = "bulwark-load"
	DefaultSecret         = "bulwark-load-secret"
	DefaultRequestTimeout = 30 * time.Second
	// MaxDuration bounds a run: a load test stops by itself.
	MaxDuration = time.Hour
	// MaxHosts bounds the simulated fleet (memory: a few KiB per host).
	MaxHosts = 1_000_000
	// MaxConcurrency and MaxConns bound requests in flight and connections.
	MaxConcurrency = 10_000
	MaxConns       = 64
)

// defaultHostPCRs are the host boot PCRs quoted beside the launch PCR: the
// ones softtpm.DefaultHostPCRs measures and the written policy pins.
var defaultHostPCRs = []int{0, 4, 7}

// Config is one load run. Addr and CAFile are required; CertFile and
// KeyFile (an admin client certificate) are required for the setup and the
// final audit check.
type Config struct {
	Addr       string // host:port of attestd
	CAFile     string // PEM CA certificate that signed attestd's server certificate
	CertFile   string // admin client certificate (PEM)
	KeyFile    string // its key (PEM)
	ServerName string // TLS server name; "" = the host part of Addr

	Hosts       int           // simulated hosts; 0 = DefaultHosts
	Rate        float64       // attestations started per second; 0 = flat out
	Rates       []float64     // a sweep: one measured phase of Duration at each rate, in turn (sweep.go)
	SLO         time.Duration // the p99 a sweep step is held to; 0 = DefaultSLO
	Duration    time.Duration // measured phase (each step of a sweep); 0 = DefaultDuration
	Count       int           // also stop after this many attestations; 0 = no count bound
	Concurrency int           // requests in flight; 0 = DefaultConcurrency
	Conns       int           // gRPC connections for the hosts' traffic; 0 = DefaultConns
	Policy      string        // policy named in launch events; "" = DefaultPolicy
	Release     bool          // also ReleaseSecrets and open each secret with the guest key
	Tokens      bool          // ask for a signed token with each verdict (the launcher does not)
	TwoCalls    bool          // Challenge and Attest as two RPCs, not one ChallengeAttest stream
	Secret      string        // secret put and expected with Release; "" = DefaultSecret

	EK        softtpm.EKType // simulated EK algorithm (ECC by default: cheap to generate)
	EKCADir   string         // stand-in EK CA (ek-ca.pem for attestd's --ek-ca); "" = a fresh CA in memory
	LaunchPCR int            // 0 = limits.DefaultLaunchPCR
	HostPCRs  []int          // quoted besides the launch PCR; nil = defaultHostPCRs

	RequestTimeout time.Duration // per RPC; 0 = DefaultRequestTimeout
	SkipAudit      bool          // do not run the nothing-lost check (not recommended)

	Logger *slog.Logger     // progress; nil = discard
	Now    func() time.Time // nil = time.Now
}

func (c *Config) setDefaults() error {
	if c.Addr == "" {
		return errors.New("--addr is required (attestd's host:port)")
	}
	if c.CAFile == "" {
		return errors.New("--ca is required (attestd's CA certificate, DATA/tls/ca.crt in its data directory)")
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("--cert and --key go together (an admin client certificate)")
	}
	if c.CertFile == "" && !c.SkipAudit {
		return errors.New("--cert/--key (an admin client certificate) are required: the load generator checks the audit log through the Admin API")
	}
	if c.Hosts == 0 {
		c.Hosts = DefaultHosts
	}
	if c.Hosts < 1 || c.Hosts > MaxHosts {
		return fmt.Errorf("--hosts %d: want 1..%d", c.Hosts, MaxHosts)
	}
	if !(c.Rate >= 0) || math.IsInf(c.Rate, 1) { // NaN compares false
		return fmt.Errorf("--rate %v: want a finite number of attestations per second, or 0 (flat out)", c.Rate)
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Duration < 0 || c.Duration > MaxDuration {
		return fmt.Errorf("--duration %v: want more than 0 and at most %v", c.Duration, MaxDuration)
	}
	if c.Rate > 0 && c.Rate*c.Duration.Seconds() < 1 {
		return fmt.Errorf("--rate %v schedules less than one attestation in --duration %v: want at least %.3g a second (one per --duration), a longer --duration, or 0 for flat out", c.Rate, c.Duration, 1/c.Duration.Seconds())
	}
	if c.Count < 0 {
		return fmt.Errorf("--count %d: want 0 (no bound) or more", c.Count)
	}
	if err := c.checkSweep(); err != nil {
		return err
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		return fmt.Errorf("--concurrency %d: want 1..%d", c.Concurrency, MaxConcurrency)
	}
	c.Concurrency = min(c.Concurrency, c.Hosts) // one request in flight per host at most
	if c.Conns == 0 {
		c.Conns = DefaultConns
	}
	if c.Conns < 1 || c.Conns > MaxConns {
		return fmt.Errorf("--conns %d: want 1..%d", c.Conns, MaxConns)
	}
	if c.Policy == "" {
		c.Policy = DefaultPolicy
	}
	if c.Secret == "" {
		c.Secret = DefaultSecret
	}
	if c.LaunchPCR == 0 {
		c.LaunchPCR = limits.DefaultLaunchPCR
	}
	if limits.CheckLaunchPCR(c.LaunchPCR) != nil {
		return fmt.Errorf("--launch-pcr %d: want %d..%d, the PCR attestd's --launch-pcr names", c.LaunchPCR, limits.MinLaunchPCR, limits.MaxPCR)
	}
	if c.HostPCRs == nil {
		c.HostPCRs = defaultHostPCRs
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.RequestTimeout < 0 {
		return fmt.Errorf("--timeout %v: want a per-RPC deadline above 0 (default %v)", c.RequestTimeout, DefaultRequestTimeout)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}
