package attestdcmd

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bulwark-project/bulwark/internal/attestd"
	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/pki"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/internal/store/postgres"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/bulwark-project/bulwark/token"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

var serveCommand = &cli.Command{
	Name:    "serve",
	Summary: "run the attestation and key-release service (gRPC over TLS)",
	Usage:   "--data DIR [--listen :8443] [--db postgres://...] [--vault tpm|sgx|file] [--policies DIR] [--ek-ca FILE...] [--peer-rate N] [--max-conns N] [--max-conns-per-peer N] [--retention DURATION] [--insecure]",
	Run:     runServe,
}

func runServe(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	var (
		dataDir      = fs.String("data", "", "data `DIR` (TLS CA and keys, embedded store, vault files); required")
		listen       = fs.String("listen", ":8443", "gRPC listen `ADDR`")
		db           = fs.String("db", "", "PostgreSQL `URL` (postgres://... or postgresql://...); default: the embedded store in DATA/store")
		vaultName    = fs.String("vault", "tpm", "vault master-key backend: tpm, sgx or file (development only)")
		tpmSpec      = fs.String("tpm", "", "TPM `SPEC` for the tpm vault backend (see docs/tpm.md)")
		allowFile    = fs.Bool("allow-insecure-file-vault", false, "allow --vault=file (master key in a plain file: development only)")
		policiesDir  = fs.String("policies", "", "policy `DIR` (default DATA/policies)")
		requireSig   = fs.Bool("require-signed-policies", false, "refuse policy files without a detached signature by a --policy-key")
		ekAllowFile  = fs.String("ek-allow", "", "`FILE` of node ids / EK fingerprints (one per line) admitted without an EK certificate")
		insecureFlag = fs.Bool("insecure", false, "serve plaintext gRPC without TLS (NEVER in production; disables the admin API)")
		metricsAddr  = fs.String("metrics-addr", "127.0.0.1:9464", "HTTP `ADDR` for /metrics and /.well-known/jwks.json (\"\" disables)")
		pprofFlag    = fs.Bool("pprof", false, "also serve Go's profiler at /debug/pprof/ on --metrics-addr (performance work; keep that address private)")
		launchPCR    = fs.Uint("launch-pcr", limits.DefaultLaunchPCR, "the launch PCR `INDEX` the launcher extends")
		nonceTTL     = fs.Duration("nonce-ttl", attestd.DefaultNonceTTL, "nonce validity")
		challengeTTL = fs.Duration("challenge-ttl", attestd.DefaultChallengeTTL, "credential challenge validity")
		tokenTTL     = fs.Duration("token-ttl", attestd.DefaultTokenTTL, "attestation token validity and release window")
		requestTO    = fs.Duration("request-timeout", attestd.DefaultRequestTimeout, "time a client has to send a whole request; a call still arriving then is cancelled")
		peerRate     = fs.Float64("peer-rate", attestd.DefaultPeerRate, "calls a second each peer address (IPv6: each /64) may make to Challenge, Enroll, ActivateCredential and Preflight together; more are refused (ResourceExhausted); 0: no limit (a load generator driving many hosts from one address)")
		peerBurst    = fs.Int("peer-burst", attestd.DefaultPeerBurst, "calls a peer address may make at once beyond --peer-rate (the token bucket's size)")
		maxConns     = fs.Int("max-conns", attestd.DefaultMaxConns, "gRPC connections open at once; more are closed as soon as accepted (the open-file limit is raised, or checked, to fit)")
		maxPerPeer   = fs.Int("max-conns-per-peer", attestd.DefaultMaxConnsPerPeer, "gRPC connections open at once from one peer address (IPv6: one /64); 0: no per-peer cap (behind a load balancer that hides client addresses)")
		idleTimeout  = fs.Duration("idle-timeout", attestd.DefaultIdleTimeout, "close a gRPC connection that has had no call for this long")
		retention    = fs.Duration("retention", attestd.DefaultRetention, "keep attestations and audit records this long, then purge them under a signed seal (docs/storage.md); 0: keep everything (the store grows for ever)")
		logFormat    = fs.String("log-format", "json", "log format: json or text")
		logLevel     = fs.String("log-level", "info", "log level: debug, info, warn, error")
		policyKeys   cli.Strings
		ekCAs        cli.Strings
		tlsSANs      cli.Strings
	)
	fs.Var(&policyKeys, "policy-key", "admin public key `FILE` (PEM) that signs policy files (repeatable)")
	fs.Var(&ekCAs, "ek-ca", "EK CA certificate `FILE` (PEM or DER; repeatable): roots, and intermediates (non-self-signed)")
	fs.Var(&tlsSANs, "tls-san", "extra DNS `NAME` or IP for the server certificate (repeatable)")
	configFile := fs.String("config", "", "YAML `FILE` of settings named as these flags (a list for a repeatable one); flags given on the command line win")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *configFile != "" {
		if err := applyConfig(fs, *configFile); err != nil {
			return err
		}
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if *dataDir == "" {
		return cli.Usagef("--data DIR is required")
	}
	if limits.CheckLaunchPCR(int(*launchPCR)) != nil { // a uint past MaxInt64 wraps negative: refused too
		return cli.Usagef("--launch-pcr %d: want %d..%d", *launchPCR, limits.MinLaunchPCR, limits.MaxPCR)
	}
	if *pprofFlag && *metricsAddr == "" {
		return cli.Usagef("--pprof serves on --metrics-addr, which is empty")
	}
	if *requireSig && len(policyKeys) == 0 {
		return cli.Usagef("--require-signed-policies needs at least one --policy-key")
	}
	// Every flag is checked before anything is created: a usage mistake
	// leaves no store, vault directory or CA behind.
	if *db != "" {
		if err := checkDBFlag(*db, "leave --db out for the embedded store in DATA/store"); err != nil {
			return err
		}
	}
	if err := checkVaultFlags(*vaultName, *allowFile); err != nil {
		return err
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--nonce-ttl", *nonceTTL}, {"--challenge-ttl", *challengeTTL}, {"--token-ttl", *tokenTTL}, {"--request-timeout", *requestTO}, {"--idle-timeout", *idleTimeout}} {
		if d.v <= 0 {
			return cli.Usagef("%s %v: want a positive duration, e.g. %s 60s", d.flag, d.v, d.flag)
		}
	}
	if *retention != 0 && (*retention < attestd.MinRetention || *retention <= *tokenTTL) {
		return cli.Usagef("--retention %v: want at least %v and longer than --token-ttl (%v), or 0 to keep everything, e.g. --retention %v", *retention, attestd.MinRetention, *tokenTTL, attestd.DefaultRetention)
	}
	if !(*peerRate >= 0) || math.IsInf(*peerRate, 0) {
		return cli.Usagef("--peer-rate %v: want calls a second (0: no limit), e.g. --peer-rate %d", *peerRate, attestd.DefaultPeerRate)
	}
	if *peerBurst < 1 {
		return cli.Usagef("--peer-burst %d: want at least 1 call, e.g. --peer-burst %d", *peerBurst, attestd.DefaultPeerBurst)
	}
	if *maxConns < 1 {
		return cli.Usagef("--max-conns %d: want at least 1 connection, e.g. --max-conns %d", *maxConns, attestd.DefaultMaxConns)
	}
	if *maxPerPeer < 0 {
		return cli.Usagef("--max-conns-per-peer %d: want connections per peer address (0: no per-peer cap), e.g. --max-conns-per-peer %d", *maxPerPeer, attestd.DefaultMaxConnsPerPeer)
	}
	if err := checkListenAddr("--listen", *listen); err != nil {
		return err
	}
	if *metricsAddr != "" {
		if err := checkListenAddr("--metrics-addr", *metricsAddr); err != nil {
			return err
		}
	}
	log, err := newLogger(env.Stderr, *logFormat, *logLevel)
	if err != nil {
		return cli.Usagef("%v", err)
	}
	// Files named by flags are read before anything is created too.
	lo, err := policy.NewLoadOptions(*requireSig, policyKeys)
	if err != nil {
		return err // names the --policy-key file
	}
	var roots, inter *x509.CertPool
	for _, f := range ekCAs {
		certs, err := readCerts(f)
		if err != nil {
			return fmt.Errorf("--ek-ca %s: %w", f, err)
		}
		for _, c := range certs {
			if isSelfSigned(c) {
				if roots == nil {
					roots = x509.NewCertPool()
				}
				roots.AddCert(c)
			} else {
				if inter == nil {
					inter = x509.NewCertPool()
				}
				inter.AddCert(c)
			}
		}
	}
	var ekAllow []string
	if *ekAllowFile != "" {
		if ekAllow, err = readAllowList(*ekAllowFile); err != nil {
			return fmt.Errorf("--ek-allow: %w", err)
		}
	}

	// Before anything is created: past the open-file limit attestd could
	// accept no one, nor serve /metrics, nor read policies.
	explicitMax := false
	fs.Visit(func(f *flag.Flag) { explicitMax = explicitMax || f.Name == "max-conns" })
	fit, before, after, err := fitFileLimit(*maxConns, explicitMax, processFileLimit)
	if err != nil {
		return err
	}
	if fit != *maxConns {
		log.Warn("the open-file limit is too low for the default --max-conns: serving fewer connections at once; raise the hard limit (systemd: LimitNOFILE) for more",
			"max_conns", fit, "default", *maxConns, "nofile", after)
		*maxConns = fit
	}
	if after != before {
		log.Info("raised the open-file limit to fit --max-conns", "from", before, "to", after, "max_conns", *maxConns)
	}

	cli.TuneGC()
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}

	// Storage.
	metrics := attestd.NewMetrics()
	sopts := store.Options{Logger: log.With("component", "store"), OnCommit: metrics.ObserveCommit}
	var st store.Store
	if *db != "" {
		st, err = postgres.Open(ctx, *db, sopts)
	} else {
		st, err = embedded.Open(ctx, filepath.Join(*dataDir, "store"), sopts)
	}
	if err != nil {
		return fmt.Errorf("opening store: %w", err)
	}
	defer st.Close()

	// Vault.
	backend, closeBackend, err := openVaultBackend(ctx, *vaultName, *dataDir, *tpmSpec, log)
	if err != nil {
		return err
	}
	defer closeBackend()
	vault, err := openVault(ctx, backend, st, *db != "", *dataDir, log)
	if err != nil {
		return err
	}
	defer vault.Close()

	// Policies.
	pdir := *policiesDir
	if pdir == "" {
		pdir = filepath.Join(*dataDir, "policies")
		if err := os.MkdirAll(pdir, 0o700); err != nil {
			return fmt.Errorf("policy directory: %w", err)
		}
	}
	// Each new policy set judges the running sandboxes again (rejudgeLoop,
	// once the server exists).
	rejudge := make(chan struct{}, 1)
	w := policy.NewWatcher(pdir, policy.WatcherOptions{Load: lo, Logger: log.With("component", "policy"), OnLoad: func() {
		select {
		case rejudge <- struct{}{}:
		default:
		}
	}})
	if err := w.Reload(); err != nil {
		log.Warn("policies did not load; every launch is denied until they do", "dir", pdir, "error", err)
	}

	if roots == nil && len(ekAllow) == 0 {
		log.Warn("no --ek-ca and no --ek-allow: no host can enroll")
	}

	tokens, err := token.LoadOrCreateKey(filepath.Join(*dataDir, token.KeyFile), nil)
	if err != nil {
		return err
	}
	attestd.RegisterPolicyMetrics(metrics, w)

	// TLS.
	var so attestd.ServeOptions
	var adminCA *x509.CertPool
	if *insecureFlag {
		log.Warn("INSECURE: serving plaintext gRPC without TLS (--insecure). Anyone on the network can read and alter attestation traffic. The admin API is disabled.")
		fmt.Fprintln(env.Stderr, "attestd: WARNING: --insecure: plaintext gRPC, no TLS, admin API disabled. Never use this in production.")
	} else {
		ca, created, err := pki.LoadOrCreate(*dataDir, nil, nil)
		if err != nil {
			return err
		}
		cert, err := ca.ServerCertificate(tlsSANs)
		if err != nil {
			return err
		}
		adminCA = ca.CAPool()
		so.TLS = attestd.ServerTLSConfig(cert, adminCA)
		if created {
			log.Info("created attestd CA", "ca", ca.CACertPath(), "sha256", ca.CAFingerprint())
		}
		fmt.Fprintf(env.Stderr, "attestd: CA %s SHA-256 fingerprint %s\n", ca.CACertPath(), ca.CAFingerprint())
	}

	rate := *peerRate
	if rate == 0 {
		rate = -1 // Config: no limit
		log.Warn("no per-peer rate limit (--peer-rate 0): anyone who reaches attestd may call Challenge, Enroll, ActivateCredential and Preflight as fast as they like")
	}
	checkpoints := attestd.NewCheckpoints(filepath.Join(*dataDir, attestd.CheckpointFile), tokens, nil)
	// A checkpoint at start: the file exists from the first start on, so
	// `attestd audit verify` can report its absence.
	if _, err := checkpoints.Record(ctx, st); err != nil {
		return fmt.Errorf("recording the audit checkpoint at start: %w", err)
	}
	srv, err := attestd.New(attestd.Config{
		Logger: log, Store: st, Vault: vault, Policies: w, Tokens: tokens, Metrics: metrics,
		Checkpoints: checkpoints, EKRoots: roots, EKIntermediates: inter, EKAllow: ekAllow, AdminCA: adminCA,
		LaunchPCR: uint32(*launchPCR), NonceTTL: *nonceTTL, ChallengeTTL: *challengeTTL, TokenTTL: *tokenTTL, RequestTimeout: *requestTO,
		PeerRate: rate, PeerBurst: *peerBurst, IdleTimeout: *idleTimeout,
	})
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		if err := w.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("policy watcher stopped", "error", err)
		}
	}()
	var retainer *attestd.Retainer
	if *retention > 0 {
		retainer = &attestd.Retainer{Store: st, Tokens: tokens, Checkpoints: checkpoints, Retention: *retention, Logger: log}
	} else {
		log.Warn("no retention (--retention 0): attestations and audit records are never purged, and the store grows for ever")
	}
	go purgeLoop(ctx, st, checkpoints, retainer, log)
	go rejudgeLoop(ctx, rejudge, srv, log)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go reloadOnHangup(ctx, hup, w, log)

	so.Listen, so.MetricsAddr, so.Pprof = *listen, *metricsAddr, *pprofFlag
	so.MaxConns, so.MaxConnsPerPeer = *maxConns, *maxPerPeer
	if *maxPerPeer == 0 {
		so.MaxConnsPerPeer = -1 // ServeOptions: no per-peer cap
		log.Warn("no per-peer connection cap (--max-conns-per-peer 0): one address may hold all --max-conns connections")
	}
	so.Ready = func(g, m net.Addr) {
		attrs := []any{"grpc", g.String(), "tls", !*insecureFlag, "vault", backend.Name(), "policies", pdir}
		if m != nil {
			attrs = append(attrs, "metrics", m.String())
		}
		log.Info("attestd serving", attrs...)
		fmt.Fprintf(env.Stderr, "attestd: serving on %s\n", g)
		if m != nil {
			fmt.Fprintf(env.Stderr, "attestd: metrics on %s\n", m)
		}
	}
	return srv.Serve(ctx, so)
}

// rejudgeLoop judges the running sandboxes again after each policy load
// (attestd.Server.Rejudge): one that no longer passes is revoked.
func rejudgeLoop(ctx context.Context, loaded <-chan struct{}, srv *attestd.Server, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-loaded:
			if n, err := srv.Rejudge(ctx); err != nil {
				log.Error("judging the running sandboxes by the new policies", "error", err)
			} else if n > 0 {
				log.Warn("sandboxes revoked: the new policies no longer allow them", "revoked", n)
			}
		}
	}
}

// reloadOnHangup re-reads the policy directory at each SIGHUP, the usual
// "reload your configuration" signal. The watcher also notices changes by
// itself, and admins can ask with 'attestd ctl policies reload'; a failed
// load is logged by the watcher and leaves the previous policies in force.
func reloadOnHangup(ctx context.Context, hup <-chan os.Signal, w *policy.Watcher, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := w.Reload(); err == nil {
				log.Info("policies reloaded on SIGHUP", "policies", len(w.Status().Policies))
			}
		}
	}
}

// purgeLoop drops expired nonces, challenges and release windows, purges
// what is older than the retention (rt; nil: nothing), and signs an audit
// checkpoint of the current head, every minute.
func purgeLoop(ctx context.Context, st store.Store, cps *attestd.Checkpoints, rt *attestd.Retainer, log *slog.Logger) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := st.PurgeExpired(ctx, time.Now()); err != nil {
				log.Warn("purging expired entries", "error", err)
			} else if n > 0 {
				log.Debug("purged expired entries", "count", n)
			}
			if rt != nil {
				if _, err := rt.Round(ctx); err != nil && ctx.Err() == nil {
					log.Warn("retention", "error", err)
				}
			}
			if _, err := cps.Record(ctx, st); errors.Is(err, attestd.ErrCheckpointsLost) {
				log.Error("audit checkpoints lost: 'attestd ctl audit verify' reports it until restart", "error", err)
			} else if err != nil {
				log.Warn("recording audit checkpoint", "error", err)
			}
		}
	}
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(string(b), "-----BEGIN") {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, err
		}
		return []*x509.Certificate{c}, nil
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate found")
	}
	return out, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return c.IsCA && c.CheckSignatureFrom(c) == nil
}

// readAllowList reads node ids or EK fingerprints, one per line; '#'
// starts a comment.
func readAllowList(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for i, line := range strings.Split(string(b), "\n") {
		if j := strings.IndexByte(line, '#'); j >= 0 {
			line = line[:j]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if len(line) > 80 {
			return nil, fmt.Errorf("%s:%d: entry too long", path, i+1)
		}
		out = append(out, line)
	}
	return out, nil
}
