// Package load is Bulwark's fleet load generator: it enrolls N simulated
// hosts (internal/softtpm) with a running attestd over TLS and drives
// Challenge → Attest → ReleaseSecrets at a target rate or flat out for a
// bounded time, then reports throughput, latency percentiles and errors by
// gRPC code, and checks through the Admin API that every verdict it received
// is in attestd's hash-chained audit log ("nothing lost").
//
// cmd/bulwark-load is its command line (Main); docs/load.md explains how to
// run it and what it reports.
package load

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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

// Phase summarises one phase of a run.
type Phase struct {
	// Count is the operations attempted (an enrollment; or one
	// Challenge → Attest [→ ReleaseSecrets] cycle), OK those that fully
	// succeeded (for attestations: an allow verdict, and with --release
	// every secret opened).
	Count uint64 `json:"count"`
	OK    uint64 `json:"ok"`
	// Errors counts failures by gRPC code name ("Unavailable", ...) or by
	// what went wrong ("deny", "release: ...").
	Errors    map[string]uint64 `json:"errors"`
	Seconds   float64           `json:"seconds"`
	PerSecond float64           `json:"per_second"` // OK / Seconds
	Latency   Latency           `json:"latency"`    // of successful operations
}

// Result is the outcome of a run; Main prints it as text or JSON.
type Result struct {
	Addr        string  `json:"addr"`
	Hosts       int     `json:"hosts"`
	EK          string  `json:"ek"`
	Concurrency int     `json:"concurrency"`
	Conns       int     `json:"conns"`
	Rate        float64 `json:"target_rate"`
	Duration    float64 `json:"duration_seconds"` // of each step of a sweep
	Release     bool    `json:"release"`
	Tokens      bool    `json:"tokens"`
	Policy      string  `json:"policy"`

	// PrepareSeconds is the time to create the simulated TPMs and their EK
	// certificates (no network).
	PrepareSeconds float64 `json:"prepare_seconds"`
	Enroll         Phase   `json:"enroll"`
	Attest         Phase   `json:"attest"`
	// RPC latencies of successful calls in the measured phase.
	RPC map[string]Latency `json:"rpc_latency"`
	// Verdicts counts allow and deny answers.
	Verdicts map[string]uint64 `json:"verdicts"`
	Audit    *AuditCheck       `json:"audit,omitempty"`
	// Sweep has each step of a --sweep run; Attest, RPC and Verdicts then
	// add all the steps up.
	Sweep *Sweep `json:"sweep,omitempty"`

	// For scripts/bench.sh: verified attestations per second and their p99.
	AttestationsPerSecond float64 `json:"attestations_per_second"`
	P99Ms                 float64 `json:"p99_ms"`
	TotalErrors           uint64  `json:"errors"`
	OK                    bool    `json:"ok"`
}

// ErrRunFailed is returned by Run with a complete Result when the run had
// errors, a deny, or a lost verdict.
var ErrRunFailed = errors.New("load run failed")

// Run performs a load run: setup through the Admin API, preparation and
// enrollment of the simulated hosts, the measured phase, and the audit
// check. The Result is returned whenever the measured phase ran, together
// with ErrRunFailed if anything went wrong in it.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	res := &Result{
		Addr: cfg.Addr, Hosts: cfg.Hosts, EK: cfg.EK.String(), Concurrency: cfg.Concurrency, Conns: cfg.Conns,
		Rate: cfg.Rate, Duration: cfg.Duration.Seconds(), Release: cfg.Release, Tokens: cfg.Tokens, Policy: cfg.Policy,
	}
	f, err := NewFleet(ctx, cfg)
	if f != nil {
		defer f.Close()
		res.PrepareSeconds, res.Enroll = f.PrepareSeconds, f.Enroll
	}
	if err != nil {
		if f != nil {
			return res, err
		}
		return nil, err
	}
	if len(cfg.Rates) > 0 {
		sweep(ctx, cfg, f, res)
	} else {
		d := f.Drive(ctx, Drive{Rate: cfg.Rate, Duration: cfg.Duration, Count: cfg.Count, Tokens: cfg.Tokens})
		res.Attest, res.RPC, res.Verdicts = d.Attest, d.RPC, d.Verdicts
	}
	cfg.Logger.Info("measured phase done", "attestations", res.Attest.Count, "per_second", res.Attest.PerSecond)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if !cfg.SkipAudit {
		if res.Audit, err = f.CheckAudit(ctx); err != nil {
			return res, err
		}
	}
	res.AttestationsPerSecond = res.Attest.PerSecond
	res.P99Ms = res.Attest.Latency.P99
	for _, n := range res.Enroll.Errors {
		res.TotalErrors += n
	}
	for _, n := range res.Attest.Errors {
		res.TotalErrors += n
	}
	res.OK = res.TotalErrors == 0 && res.Attest.OK > 0 && (res.Audit == nil && cfg.SkipAudit || res.Audit != nil && res.Audit.OK())
	if !res.OK {
		return res, ErrRunFailed
	}
	return res, nil
}

// Fleet is a set of simulated hosts enrolled with one attestd, ready to be
// driven. Create with NewFleet, Close when done. Drive and CheckAudit must
// not run concurrently with each other.
type Fleet struct {
	// PrepareSeconds and Enroll describe how the fleet came to be.
	PrepareSeconds float64
	Enroll         Phase

	cfg         Config
	conns       []*attestclient.Client
	admin       *attestclient.Client
	clients     []bulwarkv1.AttestationClient
	hosts       []*host // enrolled
	secretValue []byte
	auditAfter  uint64
	ids         []string // verdict ids received by every Drive so far
}

// NewFleet does the setup through the Admin API (the policy is loaded, the
// secret is put, the audit log's length is noted), prepares cfg.Hosts
// simulated hosts and enrolls them. It fails if none enrolled; the Fleet is
// then still returned (with its Enroll phase) and must be closed.
func NewFleet(ctx context.Context, cfg Config) (*Fleet, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	f := &Fleet{cfg: cfg}
	var err error
	if f.conns, f.admin, err = dial(cfg); err != nil {
		return nil, err
	}
	for _, c := range f.conns {
		f.clients = append(f.clients, c.Attestation)
	}
	if f.admin != nil {
		ac := f.admin.Admin
		if err := checkPolicy(ctx, ac, cfg.Policy, cfg.RequestTimeout); err != nil {
			f.Close()
			return nil, err
		}
		if cfg.Release {
			f.secretValue = make([]byte, 32)
			rand.Read(f.secretValue)
			cctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
			_, err := ac.PutSecret(cctx, &bulwarkv1.PutSecretRequest{Name: cfg.Secret, Value: f.secretValue,
				Metadata: map[string]string{"description": "bulwark-load test secret; safe to delete"}})
			cancel()
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("putting secret %q through the Admin API: %w", cfg.Secret, err)
			}
		}
		if !cfg.SkipAudit {
			cctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
			f.auditAfter, err = auditHead(cctx, ac)
			cancel()
			if err != nil {
				f.Close()
				return nil, err
			}
		}
	}

	ca, err := loadCA(cfg)
	if err != nil {
		f.Close()
		return nil, err
	}
	t0 := time.Now()
	hosts, err := prepareHosts(ctx, cfg, ca)
	if err != nil {
		f.Close()
		return nil, err
	}
	f.PrepareSeconds = time.Since(t0).Seconds()
	cfg.Logger.Info("hosts prepared", "hosts", len(hosts), "seconds", f.PrepareSeconds)

	f.hosts = enrollAll(ctx, cfg, f.clients, hosts, &f.Enroll)
	cfg.Logger.Info("hosts enrolled", "ok", len(f.hosts), "of", len(hosts), "per_second", f.Enroll.PerSecond)
	if len(f.hosts) == 0 {
		return f, fmt.Errorf("no host enrolled (errors: %v)", f.Enroll.Errors)
	}
	if ctx.Err() != nil {
		return f, ctx.Err()
	}
	return f, nil
}

// Close closes the fleet's connections.
func (f *Fleet) Close() {
	for _, c := range f.conns {
		c.Close()
	}
	if f.admin != nil {
		f.admin.Close()
	}
}

// Drive bounds one measured phase.
type Drive struct {
	Rate     float64       // attestations started per second; 0 = flat out
	Duration time.Duration // stop starting attestations after this; 0 = no time bound
	Count    int           // stop after this many attestations; 0 = no count bound
	// Tokens asks attestd for a signed token (ES256 JWT) with every
	// verdict and checks one came. Off, the hosts do as the launcher does:
	// they release by attestation id and set omit_token.
	Tokens bool
}

// DriveResult is the outcome of one measured phase.
type DriveResult struct {
	Attest   Phase
	RPC      map[string]Latency
	Verdicts map[string]uint64

	// hist holds the histograms behind Attest.Latency ("cycle") and RPC, so
	// that the steps of a sweep can be added up.
	hist map[string]*histogram
}

// add adds o's counts and histograms to r; finish then computes the summaries.
func (r *DriveResult) add(o *DriveResult) {
	if r.hist == nil {
		r.hist = map[string]*histogram{}
	}
	if r.Attest.Errors == nil {
		r.Attest.Errors = map[string]uint64{}
	}
	r.Attest.Count += o.Attest.Count
	r.Attest.OK += o.Attest.OK
	r.Attest.Seconds += o.Attest.Seconds
	for k, n := range o.Attest.Errors {
		r.Attest.Errors[k] += n
	}
	for k, n := range o.Verdicts {
		r.Verdicts[k] += n
	}
	for k, h := range o.hist {
		if r.hist[k] == nil {
			r.hist[k] = new(histogram)
		}
		r.hist[k].merge(h)
	}
}

// finish computes the rate and the latency summaries from the counts and
// the histograms.
func (r *DriveResult) finish() {
	for k, h := range r.hist {
		if k == "cycle" {
			r.Attest.summarise(h)
		} else {
			r.RPC[k] = h.summary()
		}
	}
}

// Drive runs one measured phase over the enrolled hosts. With neither
// Duration nor Count set it runs for DefaultDuration.
func (f *Fleet) Drive(ctx context.Context, d Drive) *DriveResult {
	if d.Duration <= 0 && d.Count <= 0 {
		d.Duration = DefaultDuration
	}
	r := &DriveResult{RPC: map[string]Latency{}, Verdicts: map[string]uint64{}}
	f.ids = append(f.ids, attestAll(ctx, f.cfg, d, f.clients, f.hosts, f.secretValue, r)...)
	return r
}

// CheckAudit checks that every verdict received by the fleet's drives so
// far is in attestd's audit log and that the chain verifies.
func (f *Fleet) CheckAudit(ctx context.Context) (*AuditCheck, error) {
	if f.admin == nil {
		return nil, errors.New("the audit check needs an admin certificate (--cert/--key)")
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	a, err := CheckAudit(cctx, f.admin.Admin, f.auditAfter, f.ids)
	if err != nil {
		return nil, fmt.Errorf("audit check: %w", err)
	}
	return a, nil
}

// dial opens cfg.Conns connections for the hosts' traffic (server-only TLS,
// as a launcher connects) and one admin connection with the client
// certificate (nil without one), through internal/attestclient.
func dial(cfg Config) (conns []*attestclient.Client, admin *attestclient.Client, err error) {
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, nil, fmt.Errorf("--addr %q: want host:port: %w", cfg.Addr, err)
	}
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	o := attestclient.Options{Addr: cfg.Addr, CAFile: cfg.CAFile, ServerName: cfg.ServerName}
	for i := 0; i < cfg.Conns; i++ {
		// Each Client is its own HTTP/2 connection.
		c, err := attestclient.Dial(o)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("connecting to attestd (--addr %s, --ca %s): %w", cfg.Addr, cfg.CAFile, err)
		}
		conns = append(conns, c)
	}
	if cfg.CertFile != "" {
		o.CertFile, o.KeyFile = cfg.CertFile, cfg.KeyFile
		if admin, err = attestclient.Dial(o); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("admin connection (--cert/--key): %w", err)
		}
	}
	return conns, admin, nil
}

func checkPolicy(ctx context.Context, ac bulwarkv1.AdminClient, name string, timeout time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pl, err := ac.ListPolicies(cctx, &bulwarkv1.ListPoliciesRequest{})
	if err != nil {
		return fmt.Errorf("listing attestd's policies through the Admin API (is --cert an admin certificate of this attestd?): %w", err)
	}
	var names []string
	for _, p := range pl.GetPolicies() {
		if p.GetName() == name && p.GetLoaded() {
			return nil
		}
		if p.GetName() == name {
			return fmt.Errorf("attestd has policy %q but it did not load: %s", name, p.GetError())
		}
		names = append(names, p.GetName())
	}
	return fmt.Errorf("attestd has no policy named %q loaded (it has %v): write one with 'bulwark-load --write-policy FILE' into attestd's policy directory and reload", name, names)
}

func loadCA(cfg Config) (*softtpm.EKCA, error) {
	if cfg.EKCADir == "" {
		return softtpm.NewEKCA(cfg.Now())
	}
	return softtpm.LoadOrCreateEKCA(cfg.EKCADir, cfg.Now())
}

// host is one simulated host during a run.
type host struct {
	h      *softtpm.Host
	nodeID string
	launch *softtpm.Launch
}

func prepareHosts(ctx context.Context, cfg Config, ca *softtpm.EKCA) ([]*host, error) {
	hosts := make([]*host, cfg.Hosts)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, runtime.GOMAXPROCS(0))
	now := cfg.Now()
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(hosts) {
					return
				}
				t, err := softtpm.New(softtpm.Options{EK: cfg.EK})
				if err == nil {
					_, err = ca.Certify(t, now)
				}
				if err != nil {
					errs <- fmt.Errorf("preparing simulated host %d: %w", i, err)
					return
				}
				hosts[i] = &host{h: softtpm.NewHost(t, cfg.LaunchPCR)}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return hosts, nil
}

// counter gathers one worker's outcomes; merged at the end.
type counter struct {
	count, ok uint64
	errs      map[string]uint64
	lat       histogram
}

func (c *counter) fail(what string) {
	if c.errs == nil {
		c.errs = map[string]uint64{}
	}
	c.errs[what]++
}

func codeOf(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Code().String()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return codes.DeadlineExceeded.String()
	}
	if errors.Is(err, context.Canceled) {
		return codes.Canceled.String()
	}
	return "client: " + err.Error()
}

// sumCounters adds the workers' counters up into p's counts and returns
// their merged latency histogram, for p.summarise.
func sumCounters(p *Phase, cs []*counter, elapsed time.Duration) *histogram {
	var h histogram
	p.Errors = map[string]uint64{}
	for _, c := range cs {
		p.Count += c.count
		p.OK += c.ok
		for k, v := range c.errs {
			p.Errors[k] += v
		}
		h.merge(&c.lat)
	}
	p.Seconds = elapsed.Seconds()
	return &h
}

// summarise sets p's rate and latency summary from its counts and the
// histogram of its successful operations.
func (p *Phase) summarise(h *histogram) {
	if p.Seconds > 0 {
		p.PerSecond = float64(p.OK) / p.Seconds
	}
	p.Latency = h.summary()
}

// enrollAll enrolls every host (Enroll, ActivateCredential in the softtpm,
// ActivateCredential) and records one launch on each; it returns the hosts
// that made it.
func enrollAll(ctx context.Context, cfg Config, clients []bulwarkv1.AttestationClient, hosts []*host, p *Phase) []*host {
	var next atomic.Int64
	cs := make([]*counter, cfg.Concurrency)
	okHosts := make([]bool, len(hosts))
	art := softtpm.SimulatedArtifacts()
	var wg sync.WaitGroup
	start := time.Now()
	for w := range cs {
		c := &counter{}
		cs[w] = c
		client := clients[w%len(clients)]
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(hosts) {
					return
				}
				hst := hosts[i]
				c.count++
				t0 := time.Now()
				what, err := enrollOne(ctx, cfg, client, hst)
				if err != nil {
					c.fail(what)
					cfg.Logger.Debug("enroll failed", "host", i, "err", err)
					continue
				}
				c.lat.record(time.Since(t0))
				if hst.launch, err = hst.h.Launch(art, cfg.Policy, cfg.Now()); err != nil {
					c.fail("launch: " + err.Error())
					continue
				}
				c.ok++
				okHosts[i] = true
			}
		})
	}
	wg.Wait()
	p.summarise(sumCounters(p, cs, time.Since(start)))
	var out []*host
	for i, h := range hosts {
		if okHosts[i] {
			out = append(out, h)
		}
	}
	return out
}

func enrollOne(ctx context.Context, cfg Config, client bulwarkv1.AttestationClient, hst *host) (string, error) {
	t := hst.h.TPM
	cctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	er, err := client.Enroll(cctx, &bulwarkv1.EnrollRequest{EkPublic: t.EKPublic(), EkCertificate: t.EKCertificate(), AkPublic: t.AKPublic()})
	if err != nil {
		return "enroll: " + codeOf(err), err
	}
	secret, err := t.ActivateCredential(er.GetCredentialBlob(), er.GetEncryptedSecret())
	if err != nil {
		return "enroll: credential does not activate", err
	}
	if _, err := client.ActivateCredential(cctx, &bulwarkv1.ActivateCredentialRequest{NodeId: er.GetNodeId(), Secret: secret}); err != nil {
		return "activate: " + codeOf(err), err
	}
	hst.nodeID = er.GetNodeId()
	return "", nil
}

// attestAll runs the measured phase and returns the verdict ids received.
func attestAll(ctx context.Context, cfg Config, d Drive, clients []bulwarkv1.AttestationClient, hosts []*host, secretValue []byte, res *DriveResult) []string {
	conc := min(cfg.Concurrency, len(hosts))
	pcrs := slices.Clone(cfg.HostPCRs)
	if !slices.Contains(pcrs, cfg.LaunchPCR) {
		pcrs = append(pcrs, cfg.LaunchPCR)
	}
	sort.Ints(pcrs)

	type worker struct {
		c                          counter
		challenge, attest, release histogram
		ids                        []string
		allow, deny                uint64
	}
	ws := make([]*worker, conc)
	var ticket atomic.Int64
	paced := d.Rate > 0 && !math.IsInf(d.Rate, 1) // else flat out
	length := d.Duration
	if length <= 0 {
		length = MaxDuration
	}
	start := time.Now()
	end := start.Add(length)
	var wg sync.WaitGroup
	for w := range ws {
		wk := &worker{}
		ws[w] = wk
		client := clients[w%len(clients)]
		// Worker w owns hosts w, w+conc, ...: one request per host at a time.
		var mine []*host
		for i := w; i < len(hosts); i += conc {
			mine = append(mine, hosts[i])
		}
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				now := time.Now()
				k := ticket.Add(1) - 1
				if d.Count > 0 && k >= int64(d.Count) {
					return
				}
				// t0 is when the attestation counts as started. At a target
				// rate that is its slot in the schedule, not when a worker
				// got to it: an attestation that waited for a busy worker
				// counts its wait (no "coordinated omission" flattering the
				// percentiles when attestd falls behind).
				t0 := now
				if paced {
					at, ok := slot(k, d.Rate, length)
					if !ok {
						return
					}
					t0 = start.Add(at)
					if d := t0.Sub(now); d > 0 {
						select {
						case <-time.After(d):
						case <-ctx.Done():
							return
						}
					}
				} else if !now.Before(end) {
					return
				}
				hst := mine[n%len(mine)]
				wk.c.count++
				out := attestOne(ctx, cfg, d.Tokens, client, hst, pcrs, secretValue)
				if out.verdictID != "" {
					wk.ids = append(wk.ids, out.verdictID)
				}
				switch out.verdict {
				case bulwarkv1.Verdict_VERDICT_ALLOW:
					wk.allow++
				case bulwarkv1.Verdict_VERDICT_DENY:
					wk.deny++
				}
				if out.fail != "" {
					wk.c.fail(out.fail)
					cfg.Logger.Debug("attestation failed", "node", hst.nodeID, "what", out.fail, "err", out.err)
					continue
				}
				wk.c.ok++
				wk.c.lat.record(time.Since(t0))
				wk.challenge.record(out.tChallenge)
				wk.attest.record(out.tAttest)
				if cfg.Release {
					wk.release.record(out.tRelease)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	var ids []string
	var ch, at, rl histogram
	cs := make([]*counter, len(ws))
	for i, wk := range ws {
		cs[i] = &wk.c
		ids = append(ids, wk.ids...)
		ch.merge(&wk.challenge)
		at.merge(&wk.attest)
		rl.merge(&wk.release)
		res.Verdicts["allow"] += wk.allow
		res.Verdicts["deny"] += wk.deny
	}
	res.hist = map[string]*histogram{"cycle": sumCounters(&res.Attest, cs, elapsed), "challenge": &ch, "attest": &at}
	if cfg.Release {
		res.hist["release"] = &rl
	}
	res.finish()
	return ids
}

// slot is when the k-th attestation (from 0) is scheduled at rate per
// second, counted from the start of a phase of length; ok is false when
// that is not within the phase. It computes in float64 so that no rate,
// however small, overflows time.Duration.
func slot(k int64, rate float64, length time.Duration) (at time.Duration, ok bool) {
	ns := float64(k) * float64(time.Second) / rate
	if !(ns < float64(length)) {
		return 0, false
	}
	return time.Duration(ns), true
}

type outcome struct {
	verdict                       bulwarkv1.Verdict
	verdictID                     string
	fail                          string // "" when the cycle fully succeeded
	err                           error
	tChallenge, tAttest, tRelease time.Duration
}

func attestOne(ctx context.Context, cfg Config, tokens bool, client bulwarkv1.AttestationClient, hst *host, pcrs []int, secretValue []byte) (o outcome) {
	cctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	t := time.Now()
	ch, err := client.Challenge(cctx, &bulwarkv1.ChallengeRequest{NodeId: hst.nodeID})
	o.tChallenge = time.Since(t)
	if err != nil {
		o.fail, o.err = "challenge: "+codeOf(err), err
		return o
	}
	ev, err := hst.h.Attest(pcrs, ch.GetNonce())
	if err != nil {
		o.fail, o.err = "quote: "+err.Error(), err
		return o
	}
	req := &bulwarkv1.AttestRequest{
		NodeId: hst.nodeID, Nonce: ch.GetNonce(), Quote: ev.Quote, Signature: ev.Signature,
		Pcrs: make(map[uint32][]byte, len(ev.PCRs)), LaunchLog: ev.Log, SandboxId: hst.launch.Event.SandboxID,
		OmitToken: !tokens,
	}
	for p, v := range ev.PCRs {
		req.Pcrs[uint32(p)] = v
	}
	t = time.Now()
	ar, err := client.Attest(cctx, req)
	o.tAttest = time.Since(t)
	if err != nil {
		o.fail, o.err = "attest: "+codeOf(err), err
		return o
	}
	o.verdict, o.verdictID = ar.GetVerdict(), ar.GetAttestationId()
	if o.verdict != bulwarkv1.Verdict_VERDICT_ALLOW {
		o.fail = "deny"
		o.err = fmt.Errorf("verdict %s: %v", o.verdict, ar.GetReasons())
		return o
	}
	if o.verdictID == "" {
		o.fail = "attest: allow without attestation_id"
		return o
	}
	if tokens && ar.GetToken() == "" {
		o.fail = "attest: allow without the token asked for"
		return o
	}
	if !cfg.Release {
		return o
	}
	t = time.Now()
	rr, err := client.ReleaseSecrets(cctx, &bulwarkv1.ReleaseSecretsRequest{Ref: &bulwarkv1.ReleaseSecretsRequest_AttestationId{AttestationId: o.verdictID}})
	o.tRelease = time.Since(t)
	if err != nil {
		o.fail, o.err = "release: "+codeOf(err), err
		return o
	}
	if what := checkRelease(rr, hst.launch, cfg.Secret, secretValue); what != "" {
		o.fail = "release: " + what
	}
	return o
}

// checkRelease opens every released secret with the guest key the launch
// recorded; it says what is wrong, or "".
func checkRelease(rr *bulwarkv1.ReleaseSecretsResponse, l *softtpm.Launch, name string, want []byte) string {
	if rr.GetSandboxId() != l.Event.SandboxID {
		return "released for another sandbox"
	}
	found := false
	for _, s := range rr.GetSecrets() {
		pt, err := l.GuestKey.Open(l.Event.SandboxID, s.GetName(), s.GetWrapped())
		if err != nil {
			return "a secret does not open with the guest key"
		}
		if s.GetName() == name {
			found = true
			if want != nil && subtle.ConstantTimeCompare(pt, want) != 1 {
				return "secret opened to another value than was put"
			}
		}
	}
	if !found {
		return fmt.Sprintf("secret %q not released (does the policy grant it?)", name)
	}
	return ""
}
