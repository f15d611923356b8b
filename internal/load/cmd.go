package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"sort"
	"time"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/internal/version"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

const usage = `bulwark-load — enroll N simulated hosts with attestd and drive Challenge → Attest → ReleaseSecrets

Usage:
  bulwark-load --addr HOST:PORT --ca CA.pem --cert ADMIN.pem --key ADMIN.key [flags]
  bulwark-load --write-policy FILE [--policy NAME] [--secret NAME] [--ek-ca DIR]

The simulated hosts' EK certificates are issued by a stand-in TPM manufacturer
CA (--ek-ca DIR/ek-ca.pem); start attestd with it as an EK root and without
its per-peer rate limit (attestd serve --peer-rate 0: every simulated host
calls from this one address), and put the policy from --write-policy in its
policy directory. See docs/load.md.

Flags:
`

// Main is bulwark-load's command line; it returns the exit code: 0 for a
// clean run, 1 for a failed one (any error, deny or lost verdict), 2 for a
// usage mistake.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && args[0] == "help" {
		args = []string{"--help"}
	}
	fs := flag.NewFlagSet("bulwark-load", flag.ContinueOnError)
	// The usage asked for (--help, -h, help) goes to stdout; after a
	// mistake in the flags it goes to stderr with the mistake.
	var parseOut bytes.Buffer
	fs.SetOutput(&parseOut)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	var cfg Config
	var ek, writePolicy string
	var asJSON, verbose bool
	var cpuProfile, rates string
	fs.StringVar(&cfg.Addr, "addr", "", "attestd's `HOST:PORT`")
	fs.StringVar(&cfg.CAFile, "ca", "", "attestd's CA certificate (`PEM`; DATA/tls/ca.crt in its data directory)")
	fs.StringVar(&cfg.CertFile, "cert", "", "admin client certificate (`PEM`) for setup and the audit check")
	fs.StringVar(&cfg.KeyFile, "key", "", "admin client key (`PEM`)")
	fs.StringVar(&cfg.ServerName, "server-name", "", "TLS server name to expect (default: the host of --addr)")
	fs.IntVar(&cfg.Hosts, "hosts", DefaultHosts, "simulated hosts to enroll")
	fs.Float64Var(&cfg.Rate, "rate", 0, "attestations started per second (0: flat out)")
	fs.DurationVar(&cfg.Duration, "duration", DefaultDuration, "length of the measured phase, or of each step of --sweep (at most 1h in all)")
	fs.StringVar(&rates, "sweep", "", "drive the fleet at each of these `RATES` in turn (attestations per second, comma-separated, e.g. 1000,1500,2000) and report the highest whose p99 stays within --slo")
	fs.DurationVar(&cfg.SLO, "slo", DefaultSLO, "the p99 cycle latency a --sweep step must stay within")
	fs.IntVar(&cfg.Count, "count", 0, "also stop the measured phase after `N` attestations (0: only --duration bounds it)")
	fs.IntVar(&cfg.Concurrency, "concurrency", DefaultConcurrency, "requests in flight (at most one per host)")
	fs.IntVar(&cfg.Conns, "conns", DefaultConns, "gRPC connections carrying the hosts' traffic")
	fs.StringVar(&cfg.Policy, "policy", DefaultPolicy, "policy `NAME` the launch events ask for")
	fs.BoolVar(&cfg.Release, "release", false, "also call ReleaseSecrets and open each secret with the simulated guest's key")
	fs.BoolVar(&cfg.TwoCalls, "two-calls", false, "make each attestation two RPCs, Challenge and Attest, instead of one ChallengeAttest stream (as an older launcher does; to compare the two)")
	fs.BoolVar(&cfg.Tokens, "tokens", false, "ask for a signed token (ES256 JWT) with every verdict; without it the hosts set omit_token and release by attestation id, as the launcher does")
	fs.StringVar(&cfg.Secret, "secret", DefaultSecret, "secret `NAME` put through the Admin API and expected with --release")
	fs.StringVar(&ek, "ek", "ecc", "simulated EK algorithm: ecc (P-256) or rsa (2048; slow to generate)")
	fs.StringVar(&cfg.EKCADir, "ek-ca", "", "`DIR` of the stand-in EK CA (ek-ca.pem, ek-ca.key; created when absent)")
	fs.IntVar(&cfg.LaunchPCR, "launch-pcr", limits.DefaultLaunchPCR, "PCR launch events are extended into")
	fs.DurationVar(&cfg.RequestTimeout, "timeout", DefaultRequestTimeout, "per-RPC timeout")
	fs.StringVar(&writePolicy, "write-policy", "", "write the policy admitting the simulated hosts to `FILE` (- for stdout) and exit")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	fs.BoolVar(&verbose, "v", false, "log progress and each failure to stderr")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write the load generator's own CPU profile to `FILE` (go tool pprof)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if len(args) == 1 && args[0] == "version" {
		args = []string{"--version"}
	}
	err := fs.Parse(args)
	fs.SetOutput(stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			stdout.Write(parseOut.Bytes())
			return 0
		}
		stderr.Write(parseOut.Bytes())
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("bulwark-load"))
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bulwark-load: unexpected argument %q (run 'bulwark-load --help')\n", fs.Arg(0))
		return 2
	}
	if err := refuseExplicitZero(fs); err != nil {
		fmt.Fprintf(stderr, "bulwark-load: %v (run 'bulwark-load --help')\n", err)
		return 2
	}
	if rates != "" {
		var err error
		if cfg.Rates, err = ParseRates(rates); err != nil {
			fmt.Fprintf(stderr, "bulwark-load: %v\n", err)
			return 2
		}
	}
	cli.TuneGC()
	t, err := softtpm.ParseEKType(ek)
	if err != nil {
		fmt.Fprintf(stderr, "bulwark-load: --ek: %v\n", err)
		return 2
	}
	cfg.EK = t

	if writePolicy != "" {
		if err := writePolicyFile(writePolicy, cfg, stdout); err != nil {
			fmt.Fprintf(stderr, "bulwark-load: %v\n", err)
			return 1
		}
		return 0
	}

	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := cfg.setDefaults(); err != nil { // a usage mistake, before any connection
		fmt.Fprintf(stderr, "bulwark-load: %v (run 'bulwark-load --help')\n", err)
		return 2
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(stderr, "bulwark-load: --cpuprofile: %v\n", err)
			return 2
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	res, err := Run(ctx, cfg)
	if res != nil {
		if werr := writeResult(stdout, res, asJSON); werr != nil {
			fmt.Fprintf(stderr, "bulwark-load: %v\n", werr)
			if err == nil {
				return 1
			}
		}
	}
	if err != nil {
		if !errors.Is(err, ErrRunFailed) {
			fmt.Fprintf(stderr, "bulwark-load: %v\n", err)
		} else {
			fmt.Fprintln(stderr, "bulwark-load: FAILED (see errors above)")
		}
		return 1
	}
	return 0
}

// zeroMeansDefault lists the flags whose Config field takes 0 or "" for
// "the default", with what the flag wants instead. On the command line the
// defaults are the flags' own, so a 0 or "" typed there is a mistake (an
// unset shell variable, a typo), refused rather than quietly replaced by the
// default.
var zeroMeansDefault = map[string]string{
	"hosts":       fmt.Sprintf("want 1..%d simulated hosts", MaxHosts),
	"duration":    fmt.Sprintf("want more than 0 and at most %v", MaxDuration),
	"sweep":       "want attestation rates per second, comma-separated, e.g. 1000,1500,2000",
	"slo":         "want the p99 a --sweep step must stay within, above 0",
	"concurrency": fmt.Sprintf("want 1..%d requests in flight", MaxConcurrency),
	"conns":       fmt.Sprintf("want 1..%d connections", MaxConns),
	"policy":      "want the name of the policy loaded in attestd",
	"secret":      "want a secret name",
	"launch-pcr":  fmt.Sprintf("want %d..%d, the PCR attestd's --launch-pcr names", limits.MinLaunchPCR, limits.MaxPCR),
	"timeout":     "want a per-RPC deadline above 0",
}

// refuseExplicitZero refuses a flag of zeroMeansDefault given as 0 or "".
func refuseExplicitZero(fs *flag.FlagSet) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		want, ok := zeroMeansDefault[f.Name]
		if !ok || err != nil {
			return
		}
		switch v := f.Value.String(); v {
		case "0", "0s":
			err = fmt.Errorf("--%s %s: %s; leave --%s out for the default (%s)", f.Name, v, want, f.Name, f.DefValue)
		case "":
			if f.DefValue == "" {
				err = fmt.Errorf("--%s is empty: %s, or leave --%s out", f.Name, want, f.Name)
			} else {
				err = fmt.Errorf("--%s is empty: %s; leave --%s out for the default (%s)", f.Name, want, f.Name, f.DefValue)
			}
		}
	})
	return err
}

func writePolicyFile(path string, cfg Config, stdout io.Writer) error {
	if cfg.EKCADir != "" {
		if _, err := softtpm.LoadOrCreateEKCA(cfg.EKCADir, time.Now()); err != nil {
			return err
		}
	}
	if path == "-" {
		return WritePolicy(stdout, cfg.Policy, cfg.Secret, nil)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("--write-policy: %w", err)
	}
	if err := WritePolicy(f, cfg.Policy, cfg.Secret, nil); err != nil {
		f.Close()
		return fmt.Errorf("--write-policy %s: %w", path, err)
	}
	return f.Close()
}

// writeResult prints res to w, as JSON or as the text report; it returns
// the first error encoding or writing it (a result that did not reach its
// reader is a failed run, not an empty success).
func writeResult(w io.Writer, res *Result, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return fmt.Errorf("printing the result as JSON: %w", err)
		}
		return nil
	}
	ew := &errWriter{w: w}
	PrintText(ew, res)
	if ew.err != nil {
		return fmt.Errorf("printing the result: %w", ew.err)
	}
	return nil
}

// errWriter keeps the first error writing to w and writes nothing after it.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

// PrintText writes the human-readable report.
func PrintText(w io.Writer, r *Result) {
	rate := "flat out"
	if r.Rate > 0 {
		rate = fmt.Sprintf("%.0f/s", r.Rate)
	}
	if r.Sweep != nil {
		rate = fmt.Sprintf("a sweep of %d rates", len(r.Sweep.Steps))
	}
	fmt.Fprintf(w, "bulwark-load → %s: %d hosts (%s EK), concurrency %d over %d connections, %s, %.0fs, release %v, tokens %v, policy %q\n",
		r.Addr, r.Hosts, r.EK, r.Concurrency, r.Conns, rate, r.Duration, r.Release, r.Tokens, r.Policy)
	fmt.Fprintf(w, "prepare   %d simulated TPMs + EK certificates in %.2fs\n", r.Hosts, r.PrepareSeconds)
	printPhase(w, "enroll", "enrollments", &r.Enroll)
	printPhase(w, "attest", "verified attestations", &r.Attest)
	names := make([]string, 0, len(r.RPC))
	for n := range r.RPC {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		l := r.RPC[n]
		fmt.Fprintf(w, "  rpc %-10s p50 %7.2f  p90 %7.2f  p99 %7.2f  max %7.2f ms\n", n, l.P50, l.P90, l.P99, l.Max)
	}
	if r.Sweep != nil {
		printSweep(w, r.Sweep)
	}
	fmt.Fprintf(w, "verdicts  allow %d, deny %d\n", r.Verdicts["allow"], r.Verdicts["deny"])
	if r.Audit != nil {
		fmt.Fprintf(w, "audit     %s\n", r.Audit)
	} else {
		fmt.Fprintln(w, "audit     not checked")
	}
	if r.OK {
		fmt.Fprintln(w, "result    OK")
	} else {
		fmt.Fprintf(w, "result    FAILED (%d errors)\n", r.TotalErrors)
	}
}

func printPhase(w io.Writer, name, unit string, p *Phase) {
	l := p.Latency
	fmt.Fprintf(w, "%-9s %d/%d ok in %.2fs: %.1f %s/s; latency p50 %.2f  p90 %.2f  p99 %.2f  max %.2f ms\n",
		name, p.OK, p.Count, p.Seconds, p.PerSecond, unit, l.P50, l.P90, l.P99, l.Max)
	keys := make([]string, 0, len(p.Errors))
	for k := range p.Errors {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  error %-40s %d\n", k, p.Errors[k])
	}
}

func printSweep(w io.Writer, s *Sweep) {
	fmt.Fprintf(w, "sweep     objective: cycle p99 within %.0f ms and no error\n", s.SLOMs)
	if wu := s.Warmup; wu != nil {
		fmt.Fprintf(w, "  warm-up at %.0f/s, %d attestations (one round of the fleet) in %.1fs, not judged: p99 %.2f ms\n",
			wu.Rate, wu.Attest.Count, wu.Attest.Seconds, wu.Attest.Latency.P99)
	}
	for _, st := range s.Steps {
		l := st.Attest.Latency
		verdict := "within"
		if !st.WithinSLO {
			verdict = "OUT: " + st.Why
		}
		fmt.Fprintf(w, "  %7.0f/s  achieved %7.1f/s  p50 %7.2f  p99 %7.2f ms  %s\n", st.Rate, st.Attest.PerSecond, l.P50, l.P99, verdict)
	}
	if s.MaxRate > 0 {
		fmt.Fprintf(w, "  highest rate within the objective: %.0f/s\n", s.MaxRate)
	} else {
		fmt.Fprintln(w, "  no rate was within the objective")
	}
}
