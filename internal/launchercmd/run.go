package launchercmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/internal/statedir"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"golang.org/x/term"
)

// ExitLaunchFailed is the exit code when the launch itself fails (refused
// signature, attestation denied, boot failure): the workload never ran. Any
// other code is the workload's own.
const ExitLaunchFailed = 125

// ExitInterrupted is the exit code when the launcher was interrupted
// (SIGINT, SIGTERM): 128 + SIGINT, as shells report it. A running workload
// was first given --stop-timeout to exit after SIGTERM.
const ExitInterrupted = 130

var runCommand = &cli.Command{
	Name:    "run",
	Summary: "verify, measure, boot, attest, receive secrets and run an image in a sandbox",
	Usage:   "--attestd HOST:PORT --ca CA.pem --policy NAME --image DIR [--signer cosign.pub]... [--kernel K --initrd I] [-e K=V]... [--env-file F]... [-w DIR] [--user U[:G]] [--net none|user [-p [[IP:]HOSTPORT:]PORT]...] [--volume HOSTDIR:PATH:ro]... [--tmpfs PATH[:size=N]]... [--scratch PATH[:size=N]]... [-i] [-- CMD ARG...]\n  or:  launcher run -d --policy NAME --image DIR [...] [-- CMD ARG...]   (in the launcher daemon)",
	Run:     runRun,
}

func runRun(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	c := bindRunFlags(fs, env)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := c.validate(fs); err != nil {
		return err
	}
	state, err := statedir.Ensure(env.Getenv)
	if err != nil {
		return err
	}
	if c.detach {
		req := &bulwarkv1.RunRequest{
			Policy: c.policy, Image: c.image, Args: fs.Args(), Kernel: c.kernel, Initrd: c.initrd, Cmdline: c.cmdline,
			Accel: c.accel, Cpus: uint32(c.cpus), MemoryMib: uint32(c.memory), Template: c.template,
			BootTimeoutSeconds: uint32((c.bootTimeout + time.Second - 1) / time.Second), StopTimeoutSeconds: uint32((c.stopTimeout + time.Second - 1) / time.Second),
			NoCgroup: c.noCgroup, NoConfine: c.noConfine,
		}
		var wo launch.Options
		if err := c.wf.apply(&wo, nil, env.Getenv); err != nil {
			return err
		}
		for i, v := range wo.Volumes { // the daemon does not share our directory
			if dir, rest, ok := strings.Cut(v, ":"); ok && !filepath.IsAbs(dir) {
				abs, err := filepath.Abs(dir)
				if err != nil {
					return err
				}
				wo.Volumes[i] = abs + ":" + rest
			}
		}
		req.Env, req.WorkingDir, req.User, req.Network, req.Ports = wo.Env, wo.WorkingDir, wo.User, wo.Network, wo.Ports
		req.Volumes, req.Tmpfs, req.Scratch = wo.Volumes, wo.Tmpfs, wo.Scratch
		return runDetached(ctx, env, req, c.signers, *c.socket, state, c.pullRef, c.pf)
	}
	ao, err := c.af.options()
	if err != nil {
		return err
	}
	o := launch.Options{
		Attestd: ao, Policy: c.policy, Kernel: c.kernel, Initrd: c.initrd, Agent: c.agent, Image: c.image,
		Cmdline: c.cmdline, Args: fs.Args(), Accel: c.accel, CPUs: c.cpus, MemoryMiB: c.memory,
		BootTimeout: c.bootTimeout, NoCgroup: c.noCgroup, NoConfine: c.noConfine, StopGrace: c.stopTimeout, TPM: c.tpm, StateDir: state, PCR: c.pcr,
		Template: c.template,
		Stdout:   env.Stdout, Stderr: env.Stderr,
	}
	if err := c.wf.apply(&o, env.Stdin, env.Getenv); err != nil {
		return err
	}
	var tty *terminal
	if o.TTY != nil {
		tty = newTerminal(o.Stdin, env.Stdin, env.Stdout, env.Stderr)
		*o.TTY = tty.windowSize()
	}
	if f, ok := env.Stderr.(*os.File); (ok && term.IsTerminal(int(f.Fd()))) || c.verbose {
		o.Progress = env.Stderr
	}
	if c.verbose {
		o.Logger = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if c.console != "" {
		f, err := os.OpenFile(c.console, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("--console: %w (give a file to write the guest console to)", err)
		}
		defer f.Close()
		o.Console = f
	}
	var reportFile *os.File
	if c.report != "" { // opened now: a path that cannot be written stops the launch before it starts
		if reportFile, err = os.OpenFile(c.report, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644); err != nil {
			return fmt.Errorf("--report: %w", err)
		}
		defer reportFile.Close()
	}
	// From here on a failure is a failure of the launch: exit 125, written
	// to the report. That includes the input files the launch reads: the
	// --signer keys as well as kernel, initrd, image and CA.
	t0 := time.Now()
	res, err := func() (*launch.Result, error) {
		keys, err := launch.LoadSigners(c.signers)
		if err != nil {
			return nil, fmt.Errorf("--signer: %w (give the cosign.pub written beside the key that signed the artifacts)", err)
		}
		o.Signers = keys
		if c.pullRef != "" {
			if o.Progress != nil {
				fmt.Fprintf(o.Progress, "launcher: pulling %s with its cosign signature\n", c.pullRef)
			}
			dir, cleanup, err := pullForRun(ctx, env, state, c.pullRef, c.pf, keys)
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", c.pullRef, err)
			}
			defer cleanup()
			o.Image = dir
		}
		if tty != nil {
			return tty.run(ctx, o)
		}
		return launch.Run(ctx, o)
	}()
	if reportFile != nil {
		if rerr := writeRunReport(reportFile, res, err, time.Since(t0)); rerr != nil {
			fmt.Fprintf(env.Stderr, "launcher: warning: --report %s: %v\n", c.report, rerr)
		}
	}
	if err != nil {
		if res != nil && res.SandboxID != "" {
			err = fmt.Errorf("sandbox %s: %w", res.SandboxID, err)
		}
		if ctx.Err() != nil { // Ctrl-C or SIGTERM, at any step
			return &cli.ExitError{Code: ExitInterrupted, Err: err}
		}
		return &cli.ExitError{Code: ExitLaunchFailed, Err: err}
	}
	if o.Progress != nil {
		how := "cold boot"
		if res.Template != "" {
			how = "clone of template " + res.Template
		}
		fmt.Fprintf(o.Progress, "launcher: sandbox %s exited with code %d (%s, accelerator %s, attestation %s; workload running %d ms after the sandbox started; peak memory: QEMU %.0f MiB, launcher %.0f MiB)\n",
			res.SandboxID, res.ExitCode, how, res.Accel, res.AttestationID, res.StartMillis, mib(res.QEMUPeakRSSKiB), mib(launcherPeakRSSKiB()))
	}
	if res.ExitCode != 0 {
		return &cli.ExitError{Code: res.ExitCode}
	}
	return nil
}

// runReport is the --report document. Field names are stable.
type runReport struct {
	SandboxID     string   `json:"sandbox_id,omitempty"`
	Accelerator   string   `json:"accelerator,omitempty"`
	AttestationID string   `json:"attestation_id,omitempty"`
	Policy        string   `json:"policy,omitempty"`
	Secrets       []string `json:"secrets"` // names released to the guest
	// Template is the template the sandbox was cloned from ("" for a cold
	// boot); StartMillis the time from starting the sandbox to its
	// workload running, attestation included.
	Template    string `json:"template,omitempty"`
	StartMillis int64  `json:"start_ms,omitempty"`
	// ExitCode is the workload's, or 125 when the launch failed (Error says
	// why; the workload never ran).
	ExitCode int     `json:"exit_code"`
	Error    string  `json:"error,omitempty"`
	Seconds  float64 `json:"seconds"`
	// Peak resident memory: QEMU's (0 when it did not run to its end) and
	// this launcher process's, which serves this one sandbox.
	QEMUPeakRSSMiB     float64 `json:"qemu_peak_rss_mib"`
	LauncherPeakRSSMiB float64 `json:"launcher_peak_rss_mib"`
	// Ports are the port forwards QEMU listened on (--net user -p), each
	// "HOSTIP:HOSTPORT->GUESTPORT/tcp" with the host port it chose for
	// HOSTPORT 0.
	Ports []string `json:"ports,omitempty"`
}

func writeRunReport(f *os.File, res *launch.Result, runErr error, took time.Duration) error {
	r := runReport{Secrets: []string{}, Seconds: took.Seconds(), LauncherPeakRSSMiB: mib(launcherPeakRSSKiB())}
	if res != nil {
		r.SandboxID, r.Accelerator, r.AttestationID, r.Policy = res.SandboxID, res.Accel, res.AttestationID, res.Policy
		r.ExitCode, r.QEMUPeakRSSMiB = res.ExitCode, mib(res.QEMUPeakRSSKiB)
		r.Template, r.StartMillis, r.Ports = res.Template, res.StartMillis, res.Ports
		if res.Secrets != nil {
			r.Secrets = res.Secrets
		}
	}
	if runErr != nil {
		r.ExitCode, r.Error = ExitLaunchFailed, runErr.Error()
		if errors.Is(runErr, launch.ErrInterrupted) || errors.Is(runErr, context.Canceled) {
			r.ExitCode = ExitInterrupted
		}
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		return err
	}
	return f.Close()
}

// launcherPeakRSSKiB is this process's peak resident memory (VmHWM).
func launcherPeakRSSKiB() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss
}

func mib(kib int64) float64 { return math.Round(float64(kib)/1024*10) / 10 }

// checkLaunchPCR checks --pcr as 'attestd serve --launch-pcr' does
// (limits.CheckLaunchPCR).
func checkLaunchPCR(pcr int) error {
	if err := limits.CheckLaunchPCR(pcr); err != nil {
		return cli.Usagef("--pcr %d: want %d..%d, the same PCR as attestd's --launch-pcr (default %d)", pcr, limits.MinLaunchPCR, limits.MaxPCR, limits.DefaultLaunchPCR)
	}
	return nil
}
