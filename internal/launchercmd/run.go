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
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/kvm/channel"
	"github.com/bulwark-project/bulwark/policy"
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
	af := addAttestdFlags(fs, env)
	policyName := fs.String("policy", "", "the admin policy to be judged by (required)")
	image := fs.String("image", "", "OCI image: layout directory, OCI or docker archive (required)")
	kernel := fs.String("kernel", "", "guest kernel (default: the host kernel as a PVH vmlinux)")
	initrd := fs.String("initrd", "", "base initramfs from 'launcher initrd build' (default: built now for the host kernel)")
	agent := fs.String("agent", "", "guest agent binary when --initrd is not given (default: bulwark-agent beside launcher)")
	cmdline := fs.String("cmdline", "", "guest kernel command line (default: the measured default for the accelerator)")
	var signers cli.Strings
	fs.Var(&signers, "signer", "public key trusted to sign kernel, initrd and image (repeatable); each artifact must verify before boot")
	accel := fs.String("accel", "auto", "accelerator: auto, kvm or tcg")
	cpus := fs.Int("cpus", 1, "virtual CPUs")
	mem := fs.Int("memory", 512, "memory in MiB")
	bootTimeout := fs.Duration("boot-timeout", 120*time.Second, "how long the guest may take to boot")
	stopTimeout := fs.Duration("stop-timeout", launch.DefaultStopGrace, "on Ctrl-C (SIGINT/SIGTERM), how long the workload has to exit after SIGTERM before it is killed")
	noConfine := fs.Bool("no-confine", false, "run QEMU as the launcher's user, without a sandbox uid and namespaces (by default a launch where QEMU cannot be confined fails)")
	noCgroup := fs.Bool("no-cgroup", false, "run the sandbox without CPU, memory and pids limits (by default a launch whose cgroup cannot be made fails)")
	tpmSpec := fs.String("tpm", env.Getenv("BULWARK_TPM"), "host TPM spec (env BULWARK_TPM); default /dev/tpmrm0 or the managed swtpm")
	pcr := fs.Int("pcr", limits.DefaultLaunchPCR, fmt.Sprintf("launch PCR, %d..%d (must match attestd's --launch-pcr)", limits.MinLaunchPCR, limits.MaxPCR))
	console := fs.String("console", "", "write the guest console (kernel log) to this file")
	report := fs.String("report", "", "write what the launch ended with to this `FILE` as JSON: sandbox, attestation, exit code or error, time, peak memory")
	template := fs.String("template", "", "VM template to clone from: a name from 'launcher template ls', or \"none\" to boot cold (default: the template of this launch's recipe when there is one)")
	verbose := fs.Bool("v", false, "log details to stderr")
	detach := fs.Bool("d", false, "detach: launch in the launcher daemon and print the sandbox id once the workload runs (see ps, logs, stop)")
	socket := socketFlag(fs, env)
	wf := addWorkloadFlags(fs)
	pf := addPullFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *policyName == "" || *image == "" {
		return cli.Usagef("--policy NAME and --image DIR are required")
	}
	// An --image that is a registry reference is pulled (by digest, or by
	// tag with --allow-tag) with the registry's cosign signature, then
	// measured like a local layout.
	pullRef := ""
	if isRegistryRef(*image) {
		pullRef = *image
	} else if *pf.allowTag || *pf.insecure {
		return cli.Usagef("--allow-tag and --allow-http-registry go with an --image that is a registry reference")
	}
	if err := checkRunFlags(*accel, *cmdline, *cpus, *mem, *pcr, *bootTimeout); err != nil {
		return err
	}
	if *stopTimeout <= 0 || *stopTimeout > channel.MaxStopGraceSeconds*time.Second {
		return cli.Usagef("--stop-timeout %v: want a positive duration up to %v, e.g. 10s", *stopTimeout, channel.MaxStopGraceSeconds*time.Second)
	}
	state, err := statedir.Ensure(env.Getenv)
	if err != nil {
		return err
	}
	if *detach {
		// What only the daemon decides (its attestd, TPM, PCR, agent) or
		// what a detached launch has no use for is refused, not ignored.
		var daemonOwned []string
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "attestd", "ca", "server-name", "insecure", "tpm", "pcr", "agent", "report", "console", "v":
				daemonOwned = append(daemonOwned, "--"+f.Name)
			}
		})
		if len(daemonOwned) > 0 {
			return cli.Usagef("run -d: %s: the launcher daemon's own settings decide these (see 'launcher daemon --help'); drop them", strings.Join(daemonOwned, ", "))
		}
		req := &bulwarkv1.RunRequest{
			Policy: *policyName, Image: *image, Args: fs.Args(), Kernel: *kernel, Initrd: *initrd, Cmdline: *cmdline,
			Accel: *accel, Cpus: uint32(*cpus), MemoryMib: uint32(*mem), Template: *template,
			BootTimeoutSeconds: uint32((*bootTimeout + time.Second - 1) / time.Second), StopTimeoutSeconds: uint32((*stopTimeout + time.Second - 1) / time.Second),
			NoCgroup: *noCgroup, NoConfine: *noConfine,
		}
		if *wf.interactive {
			return cli.Usagef("run -d: -i: a detached workload has no stdin (run it in the foreground)")
		}
		if *wf.tty {
			return cli.Usagef("run -d: -t: a detached workload has no terminal (run it in the foreground)")
		}
		var wo launch.Options
		if err := wf.apply(&wo, nil, env.Getenv); err != nil {
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
		return runDetached(ctx, env, req, signers, *socket, state, pullRef, pf)
	}
	ao, err := af.options()
	if err != nil {
		return err
	}
	o := launch.Options{
		Attestd: ao, Policy: *policyName, Kernel: *kernel, Initrd: *initrd, Agent: *agent, Image: *image,
		Cmdline: *cmdline, Args: fs.Args(), Accel: *accel, CPUs: *cpus, MemoryMiB: *mem,
		BootTimeout: *bootTimeout, NoCgroup: *noCgroup, NoConfine: *noConfine, StopGrace: *stopTimeout, TPM: *tpmSpec, StateDir: state, PCR: *pcr,
		Template: *template,
		Stdout:   env.Stdout, Stderr: env.Stderr,
	}
	if err := wf.apply(&o, env.Stdin, env.Getenv); err != nil {
		return err
	}
	var tty *terminal
	if o.TTY != nil {
		tty = newTerminal(o.Stdin, env.Stdin, env.Stdout, env.Stderr)
		*o.TTY = tty.windowSize()
	}
	if f, ok := env.Stderr.(*os.File); (ok && term.IsTerminal(int(f.Fd()))) || *verbose {
		o.Progress = env.Stderr
	}
	if *verbose {
		o.Logger = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if *console != "" {
		f, err := os.OpenFile(*console, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("--console: %w (give a file to write the guest console to)", err)
		}
		defer f.Close()
		o.Console = f
	}
	var reportFile *os.File
	if *report != "" { // opened now: a path that cannot be written stops the launch before it starts
		if reportFile, err = os.OpenFile(*report, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644); err != nil {
			return fmt.Errorf("--report: %w", err)
		}
		defer reportFile.Close()
	}
	// From here on a failure is a failure of the launch: exit 125, written
	// to the report. That includes the input files the launch reads: the
	// --signer keys as well as kernel, initrd, image and CA.
	t0 := time.Now()
	res, err := func() (*launch.Result, error) {
		keys, err := launch.LoadSigners(signers)
		if err != nil {
			return nil, fmt.Errorf("--signer: %w (give the cosign.pub written beside the key that signed the artifacts)", err)
		}
		o.Signers = keys
		if pullRef != "" {
			if o.Progress != nil {
				fmt.Fprintf(o.Progress, "launcher: pulling %s with its cosign signature\n", pullRef)
			}
			dir, cleanup, err := pullForRun(ctx, env, state, pullRef, pf, keys)
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", pullRef, err)
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
			fmt.Fprintf(env.Stderr, "launcher: warning: --report %s: %v\n", *report, rerr)
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

// checkRunFlags validates run's values before anything is opened, measured
// or booted; a bad value is a usage error (exit 2) and, the launch never
// having started, no --report is written.
func checkRunFlags(accel, cmdline string, cpus, memMiB, pcr int, bootTimeout time.Duration) error {
	switch accel {
	case kvm.AccelAuto, kvm.AccelKVM, kvm.AccelTCG:
	default:
		return cli.Usagef("--accel %q: want auto, kvm or tcg", accel)
	}
	// launch.Run checks it too; here it is a usage error, before any work.
	if err := policy.CheckCmdline(cmdline); err != nil {
		return cli.Usagef("--cmdline: %v", err)
	}
	// The sandbox sizes kvm.Start accepts, checked here before the TPM is
	// opened and attestd asked.
	if cpus < kvm.MinCPUs || cpus > kvm.MaxCPUs {
		return cli.Usagef("--cpus %d: want %d..%d virtual CPUs", cpus, kvm.MinCPUs, kvm.MaxCPUs)
	}
	if memMiB < kvm.MinMemoryMiB || memMiB > kvm.MaxMemoryMiB {
		return cli.Usagef("--memory %d: want %d..%d MiB", memMiB, kvm.MinMemoryMiB, kvm.MaxMemoryMiB)
	}
	if err := checkLaunchPCR(pcr); err != nil {
		return err
	}
	if bootTimeout <= 0 {
		return cli.Usagef("--boot-timeout %v: want a positive duration, e.g. 120s", bootTimeout)
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
