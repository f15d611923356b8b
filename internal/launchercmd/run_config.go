package launchercmd

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/kvm/channel"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

// runConfig is everything `launcher run` is told on its command line:
// bindRunFlags defines the flags, validate checks them all, in this one
// place, before anything is opened, measured or booted (a bad value is a
// usage error, exit 2, and no --report is written).
type runConfig struct {
	af                                            attestdFlags
	policy, image, kernel, initrd, agent, cmdline string
	signers                                       cli.Strings
	accel                                         string
	cpus, memory, pcr                             int
	bootTimeout, stopTimeout                      time.Duration
	noConfine, noCgroup, verbose, detach          bool
	tpm, console, report, template                string
	socket                                        *string
	wf                                            *workloadFlags
	pf                                            pullFlags
	pullRef                                       string // set by validate: --image as a registry reference
}

func bindRunFlags(fs *flag.FlagSet, env *cli.Env) *runConfig {
	c := &runConfig{af: addAttestdFlags(fs, env)}
	fs.StringVar(&c.policy, "policy", "", "the admin policy to be judged by (required)")
	fs.StringVar(&c.image, "image", "", "OCI image: layout directory, OCI or docker archive (required)")
	fs.StringVar(&c.kernel, "kernel", "", "guest kernel (default: the host kernel as a PVH vmlinux)")
	fs.StringVar(&c.initrd, "initrd", "", "base initramfs from 'launcher initrd build' (default: built now for the host kernel)")
	fs.StringVar(&c.agent, "agent", "", "guest agent binary when --initrd is not given (default: bulwark-agent beside launcher)")
	fs.StringVar(&c.cmdline, "cmdline", "", "guest kernel command line (default: the measured default for the accelerator)")
	fs.Var(&c.signers, "signer", "public key trusted to sign kernel, initrd and image (repeatable); each artifact must verify before boot")
	fs.StringVar(&c.accel, "accel", "auto", "accelerator: auto, kvm or tcg")
	fs.IntVar(&c.cpus, "cpus", 1, "virtual CPUs")
	fs.IntVar(&c.memory, "memory", 512, "memory in MiB")
	fs.DurationVar(&c.bootTimeout, "boot-timeout", 120*time.Second, "how long the guest may take to boot")
	fs.DurationVar(&c.stopTimeout, "stop-timeout", launch.DefaultStopGrace, "on Ctrl-C (SIGINT/SIGTERM), how long the workload has to exit after SIGTERM before it is killed")
	fs.BoolVar(&c.noConfine, "no-confine", false, "run QEMU as the launcher's user, without a sandbox uid and namespaces (by default a launch where QEMU cannot be confined fails)")
	fs.BoolVar(&c.noCgroup, "no-cgroup", false, "run the sandbox without CPU, memory and pids limits (by default a launch whose cgroup cannot be made fails)")
	fs.StringVar(&c.tpm, "tpm", env.Getenv("BULWARK_TPM"), "host TPM spec (env BULWARK_TPM); default /dev/tpmrm0 or the managed swtpm")
	fs.IntVar(&c.pcr, "pcr", limits.DefaultLaunchPCR, fmt.Sprintf("launch PCR, %d..%d (must match attestd's --launch-pcr)", limits.MinLaunchPCR, limits.MaxPCR))
	fs.StringVar(&c.console, "console", "", "write the guest console (kernel log) to this file")
	fs.StringVar(&c.report, "report", "", "write what the launch ended with to this `FILE` as JSON: sandbox, attestation, exit code or error, time, peak memory")
	fs.StringVar(&c.template, "template", "", "VM template to clone from: a name from 'launcher template ls', or \"none\" to boot cold (default: the template of this launch's recipe when there is one)")
	fs.BoolVar(&c.verbose, "v", false, "log details to stderr")
	fs.BoolVar(&c.detach, "d", false, "detach: launch in the launcher daemon and print the sandbox id once the workload runs (see ps, logs, stop)")
	c.socket = socketFlag(fs, env)
	c.wf = addWorkloadFlags(fs)
	c.pf = addPullFlags(fs)
	return c
}

// validate checks the parsed flags (fs, for which were given).
func (c *runConfig) validate(fs *flag.FlagSet) error {
	if c.policy == "" || c.image == "" {
		return cli.Usagef("--policy NAME and --image DIR are required")
	}
	// An --image that is a registry reference is pulled (by digest, or by
	// tag with --allow-tag) with the registry's cosign signature, then
	// measured like a local layout.
	if isRegistryRef(c.image) {
		c.pullRef = c.image
	} else if *c.pf.allowTag || *c.pf.insecure {
		return cli.Usagef("--allow-tag and --allow-http-registry go with an --image that is a registry reference")
	}
	if err := checkRunFlags(c.accel, c.cmdline, c.cpus, c.memory, c.pcr, c.bootTimeout); err != nil {
		return err
	}
	if c.stopTimeout <= 0 || c.stopTimeout > channel.MaxStopGraceSeconds*time.Second {
		return cli.Usagef("--stop-timeout %v: want a positive duration up to %v, e.g. 10s", c.stopTimeout, channel.MaxStopGraceSeconds*time.Second)
	}
	if !c.detach {
		return nil
	}
	// What only the daemon decides (its attestd, TPM, PCR, agent) or what
	// a detached launch has no use for is refused, not ignored.
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
	if *c.wf.interactive {
		return cli.Usagef("run -d: -i: a detached workload has no stdin (run it in the foreground)")
	}
	if *c.wf.tty {
		return cli.Usagef("run -d: -t: a detached workload has no terminal (run it in the foreground)")
	}
	return nil
}

// checkRunFlags validates the sandbox's values, for run and template
// create, before anything is opened, measured or booted.
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
