package launch

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/internal/statedir"
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/bulwark-project/bulwark/tpm"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

// hostPCRs are the host boot-state PCRs quoted beside the launch PCR, so a
// policy can require host boot state.
var hostPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7}

// bootLoaderPCRs are quoted too when the firmware event log is sent: what
// the boot loader measured (grub: its commands and the host kernel's
// command line in PCR 8, the files it read in PCR 9). attestd replays the
// log's events for them, so a log that does not match what the boot loader
// extended is refused, and policy reads the kernel command line from them.
var bootLoaderPCRs = []int{8, 9}

// quotedPCRs are the PCRs a launch quotes: the launch PCR and hostPCRs,
// and bootLoaderPCRs when a firmware event log goes with the quote; sorted,
// each once (a launch PCR among them is not repeated).
func quotedPCRs(launchPCR int, firmwareLog []byte) []int {
	pcrs := append([]int{launchPCR}, hostPCRs...)
	if len(firmwareLog) > 0 {
		pcrs = append(pcrs, bootLoaderPCRs...)
	}
	slices.Sort(pcrs)
	return slices.Compact(pcrs)
}

// ErrDenied is returned when attestd denies the launch after boot; ErrRefused
// when its policy refuses the artifacts before anything boots, or when the
// command line is one the guest kernel could split differently from the
// policy (policy.CheckCmdline). The error text carries every reason.
var (
	ErrDenied  = errors.New("attestation denied")
	ErrRefused = errors.New("launch refused before boot")
)

// Options describe one measured, attested launch.
type Options struct {
	// Attestd says how to reach attestd (address, CA).
	Attestd attestclient.Options
	// Policy names the admin policy to be judged by.
	Policy string
	// Kernel is the guest kernel (default: the host's, as PVH vmlinux).
	// Initrd is the base initramfs (agent + modules); default: built now from
	// Agent and the host kernel's modules, which only fits the host kernel.
	Kernel, Initrd string
	// Agent is the guest agent binary used when Initrd is empty (default:
	// bulwark-agent next to the launcher executable).
	Agent string
	// Image is the OCI image (layout directory or archive) to run.
	Image string
	// Cmdline is the guest kernel command line ("" = kvm.DefaultCmdline).
	Cmdline string
	// Args replace the image's entrypoint+cmd when not empty.
	Args []string
	// Env ("KEY=VALUE"), WorkingDir and User are set over the image's
	// config, as docker run's -e/--env-file, -w and --user do; Network is
	// NetworkNone ("" too), NetworkUser, with Ports forwarded
	// ("[[HOSTIP:]HOSTPORT:]GUESTPORT[/tcp]", docker run's -p), or
	// NetworkTap, joining the guest to the pod's network namespace NetNS
	// (kvm.Config.NetNS). All are checked by ValidateWorkload and recorded
	// in the launch event, but NetNS: where the sandbox runs, not what.
	Env        []string
	WorkingDir string
	User       string
	Network    string
	Ports      []string
	NetNS      string
	// Volumes ("HOSTDIR:PATH:ro", docker run's -v) are read-only erofs
	// disks built from host directories, measured into the launch event
	// by digest; Tmpfs ("PATH[:size=N]", --tmpfs) writable scratch. At
	// most measure.MaxVolumes of each; checked by ValidateWorkload.
	Volumes []string
	Tmpfs   []string
	// Scratch ("PATH[:size=N]", --scratch) are writable scratch disks:
	// empty ext4 filesystems on sparse files the launcher makes in
	// RunDir (removed with it) or, for a one-shot launch, in StateDir
	// (unlinked at once: gone when the sandbox ends). N defaults to
	// DefaultScratchSize. At most measure.MaxScratch; recorded as
	// "scratch:PATH:BYTES".
	Scratch []string
	// Stdin, when set, is the workload's stdin (docker run -i), read until
	// EOF; nil gives it /dev/null. Not recorded: it is input at run time,
	// like the network's.
	Stdin io.Reader
	// TTY, when set, gives the workload a terminal of this initial size
	// (docker run -t, kvm.Config.TTY): its output, stdout and stderr
	// merged, arrives on Stdout; Launched.Sandbox().Resize changes the
	// size. Not recorded either: how the workload's stdio is connected
	// is not what runs (docs/eventlog.md).
	TTY *kvm.WindowSize
	// Signers are the keys trusted to sign kernel, initrd and image. When
	// given, every artifact must carry a valid signature by one of them
	// before anything boots.
	Signers []crypto.PublicKey
	// Sandbox resources and accelerator ("auto", "kvm", "tcg").
	Accel       string
	CPUs        int
	MemoryMiB   int
	BootTimeout time.Duration
	// NoCgroup runs the sandbox without CPU, memory and pids limits; by
	// default a launch whose limits cannot be enforced fails.
	NoCgroup bool
	// NoConfine runs QEMU as the launcher's user, without a sandbox uid and
	// namespaces; by default a launch where QEMU cannot be confined fails.
	NoConfine bool
	// StopGrace is how long the workload has to exit after SIGTERM when
	// ctx ends while it runs (Ctrl-C); default DefaultStopGrace.
	StopGrace time.Duration
	// ReattestInterval, when set (by the host service), asks attestd to
	// keep the sandbox's state: the host will re-attest it that often
	// (Reattest), and attestd reports it stale after twice that.
	ReattestInterval time.Duration
	// TPM is the host TPM spec (tpm.ParseSpec); StateDir holds the launch log.
	TPM      string
	StateDir string
	// HostTPM, when set, is the host TPM already open (the host service
	// holds it for every launch); TPM is then ignored and HostTPM is not
	// closed.
	HostTPM *tpm.TPM
	// Templates, when set, keeps loaded templates between launches, so
	// that every clone of a template maps the same pages (the host
	// service); nil loads the template for this launch only.
	Templates *TemplateCache
	// PCR is the launch PCR, checked by limits.CheckLaunchPCR as attestd's
	// --launch-pcr is (0 means limits.DefaultLaunchPCR).
	PCR int
	// RunDir, when set, makes the sandbox persistent (kvm.Config.RunDir):
	// its QEMU outlives this process, and another can take it over.
	RunDir string
	// SandboxID is the sandbox's id (32 lowercase hex digits, as
	// NewSandboxID makes); empty: a fresh one.
	SandboxID string
	// Template picks the VM template to clone from: TemplateAuto (the
	// template of this launch's recipe when there is one), TemplateNone
	// (boot cold), or a template's name or id (which must match the recipe).
	Template string
	// Stdout and Stderr receive the workload's output; Console the guest
	// console (optional); Progress one line per step (optional, for a
	// terminal); Warnings what the user must know even when not watching
	// (software emulation, no local signature check); default Stderr.
	Stdout, Stderr, Console, Progress, Warnings io.Writer
	Logger                                      *slog.Logger
	// Rand is where generated sandbox ids and the guest's fresh entropy
	// come from (default: crypto/rand); Now is the wall clock of the launch
	// event and the guest (default: time.Now). Tests inject them, as
	// attestd's Config does.
	Rand io.Reader
	Now  func() time.Time
	// Pod makes the sandbox a pod VM (pod.go): its workload is the pod,
	// the image is its first container's, which StartFirstContainer runs
	// with Args, Env, WorkingDir and User, and AddContainer adds others.
	// A pod is a clone only of a pod's template (TemplateOptions with
	// Pod: its machine has the image slots).
	Pod bool
}

// Result is what a launch ended with.
type Result struct {
	SandboxID string
	Accel     string
	// ImageDigest is the image's manifest digest, as measured.
	ImageDigest   string
	AttestationID string
	Policy        string
	ExitCode      int
	Secrets       []string
	// Template names the template the sandbox was cloned from ("" for a
	// cold boot); StartMillis is the time from starting the sandbox to its
	// workload running (attestation included).
	Template    string
	StartMillis int64
	// QEMUPeakRSSKiB is QEMU's peak resident memory (VmHWM) once it has
	// exited; 0 when it did not get that far.
	QEMUPeakRSSKiB int64
	// Ports are the port forwards QEMU listens on, "HOSTIP:HOSTPORT->GUESTPORT/tcp",
	// with the port it chose for a forward of host port 0.
	Ports []string
}

func (o *Options) progress(format string, a ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "launcher: "+format+"\n", a...)
	}
}

// cgroupParent is kvm.Config.CgroupParent for Options.NoCgroup.
func cgroupParent(none bool) string {
	if none {
		return "none"
	}
	return ""
}

func (o *Options) warn(format string, a ...any) {
	if w := o.Warnings; w != nil {
		fmt.Fprintf(w, "launcher: warning: "+format+"\n", a...)
	} else if o.Stderr != nil {
		fmt.Fprintf(o.Stderr, "launcher: warning: "+format+"\n", a...)
	}
}

// setDefaults checks and fills in what Run and CreateTemplate share.
func (o *Options) setDefaults() error {
	if o.BootTimeout < 0 {
		return fmt.Errorf("boot timeout %v is negative", o.BootTimeout)
	}
	// Policy judges the command line as policy.ParseCmdline splits it; one
	// the guest kernel could split differently must not boot. (The default
	// command lines pass: a test in internal/launchercmd evaluates them.)
	if o.Cmdline != "" {
		if err := policy.CheckCmdline(o.Cmdline); err != nil {
			return fmt.Errorf("%w: %w", ErrRefused, err)
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.StopGrace < 0 {
		return fmt.Errorf("stop grace period %v is negative", o.StopGrace)
	}
	if o.StopGrace == 0 {
		o.StopGrace = DefaultStopGrace
	}
	if o.StateDir == "" {
		dir, err := statedir.Ensure(nil)
		if err != nil {
			return err
		}
		o.StateDir = dir
	}
	return nil
}

// accelAndCmdline chooses the accelerator, which decides the default
// command line, which is measured.
func (o *Options) accelAndCmdline() (string, string, error) {
	accel, err := kvm.ChooseAccel(o.Accel)
	if err != nil {
		return "", "", err
	}
	o.progress("accelerator: %s", accel.Accel)
	if accel.Accel == "tcg" {
		o.warn("the sandbox runs under software emulation (TCG), much slower than KVM: %s", accel.Reason)
	}
	cmdline := o.Cmdline
	if cmdline == "" {
		if cmdline, err = kvm.DefaultCmdline(accel.Accel); err != nil {
			return "", "", err
		}
	}
	return accel.Accel, cmdline, nil
}

// sandboxConfig is the kvm.Config of a launch (without name and image).
func (o *Options) sandboxConfig(kernel, initrd *measure.Pinned, accel, cmdline string) kvm.Config {
	return kvm.Config{
		Kernel: kernel.File, Initrd: initrd.File, KernelDigest: kernel.Digest, InitrdDigest: initrd.Digest,
		Cmdline: cmdline, Accel: accel, CPUs: o.CPUs, MemoryMiB: o.MemoryMiB, BootTimeout: o.BootTimeout,
		CgroupParent: cgroupParent(o.NoCgroup), Unconfined: o.NoConfine, RunDir: o.RunDir,
		Stdout: o.Stdout, Stderr: o.Stderr, Console: o.Console, Logger: o.Logger,
		Rand: o.Rand, Now: o.Now, Pod: o.Pod,
	}
}

// now is o.Now(), or the real time.
func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// random is o.Rand, or crypto/rand.
func (o *Options) random() io.Reader {
	if o.Rand != nil {
		return o.Rand
	}
	return rand.Reader
}

// Run performs the launch, step by step (see the package doc), and waits
// for the workload to end. Any failure stops the sandbox; the workload
// starts only after attestd allowed the launch and released its secrets.
// Result.ExitCode is the workload's.
func Run(ctx context.Context, o Options) (*Result, error) {
	l, err := Start(ctx, o)
	if err != nil {
		if l != nil {
			return l.res, err
		}
		return nil, err
	}
	defer l.Close()
	res, err := l.Wait(ctx)
	l.recordEnd(ctx, EndReason(err))
	return res, err
}

// EndReason is the reason (measure.End*) an END record gives for a
// sandbox whose Wait returned err.
func EndReason(err error) string {
	switch {
	case err == nil:
		return measure.EndExited
	case errors.Is(err, ErrInterrupted):
		return measure.EndStopped
	}
	return measure.EndFailed
}

// RecordEnd appends END records for sandboxes ids (reason, a
// measure.End* constant) to the host launch log in stateDir at PCR pcr
// (0: limits.DefaultLaunchPCR), for those the current log launched and
// that have not ended yet (docs/eventlog.md "END records"). It returns
// how many it appended.
func RecordEnd(ctx context.Context, t *tpm.TPM, stateDir string, pcr int, reason string, ids ...string) (int, error) {
	if pcr == 0 {
		pcr = limits.DefaultLaunchPCR
	}
	return NewHostLog(filepath.Join(stateDir, "launch"), pcr).End(ctx, t, reason, ids...)
}

// endTimeout bounds recording a sandbox's end, which runs after the
// launch's context may have ended (Ctrl-C).
const endTimeout = 30 * time.Second

// recordEnd records the sandbox's END in the host log (one-shot launches:
// the host TPM is opened again when the launch did not hold it), warning
// when it cannot.
func (l *Launched) recordEnd(ctx context.Context, reason string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
	defer cancel()
	t := l.o.HostTPM
	if t == nil {
		var err error
		if t, err = tpm.Open(ctx, l.o.TPM); err != nil {
			l.o.warn("the end of sandbox %s is not recorded in the launch log: host TPM: %v", l.res.SandboxID, err)
			return
		}
		defer t.Close()
	}
	if _, err := RecordEnd(ctx, t, l.o.StateDir, l.o.PCR, reason, l.res.SandboxID); err != nil {
		l.o.warn("the end of sandbox %s is not recorded in the launch log: %v", l.res.SandboxID, err)
	}
}

// Launched is a sandbox whose workload runs: what Start returns. Wait for
// it, Stop it, and Close it when done.
type Launched struct {
	o   Options
	sb  *kvm.Sandbox
	res *Result
	pod *podLaunch // a pod VM's (Options.Pod)
}

// Adopt is the Launched of a sandbox taken over with kvm.Reattach (its
// launch was another process's): res is what that launch recorded;
// stopGrace is Options.StopGrace (0: DefaultStopGrace).
func Adopt(sb *kvm.Sandbox, res Result, stopGrace time.Duration) *Launched {
	if stopGrace <= 0 {
		stopGrace = DefaultStopGrace
	}
	return &Launched{o: Options{StopGrace: stopGrace}, sb: sb, res: &res}
}

// Sandbox is the running sandbox.
func (l *Launched) Sandbox() *kvm.Sandbox { return l.sb }

// Result is what is known of the launch so far (ExitCode is set by Wait).
func (l *Launched) Result() Result { return *l.res }

// Close tears the sandbox down if it still runs and releases it.
func (l *Launched) Close() error { return l.sb.Close() }

// Wait waits for the workload to exit and returns the launch's result.
// When ctx ends first (Ctrl-C), the workload gets SIGTERM and
// Options.StopGrace to exit before it is killed; the error then wraps
// ErrInterrupted.
func (l *Launched) Wait(ctx context.Context) (*Result, error) {
	code, err := l.o.waitWorkload(ctx, l.sb)
	res := l.res
	res.ExitCode = code
	res.QEMUPeakRSSKiB = l.sb.MaxRSSKiB()
	if err != nil {
		return res, fmt.Errorf("sandbox: %w", err)
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("%w: the workload was stopped and exited with code %d", ErrInterrupted, code)
	}
	return res, nil
}

// Start performs the launch up to the workload running (see Run): verify,
// measure, ask attestd, boot or clone, record, attest, release the secrets
// and start the workload. On failure the sandbox is gone; the Launched
// returned beside an error (possibly nil) only carries what is known
// (Result().SandboxID once it was chosen).
func Start(ctx context.Context, o Options) (*Launched, error) {
	if o.Policy == "" {
		return nil, errors.New("no policy named: give --policy NAME (the admin policy attestd judges this launch by)")
	}
	if o.Image == "" {
		return nil, errors.New("no image: give --image DIR (an OCI image layout or archive)")
	}
	if o.PCR == 0 { // the zero value; 'launcher run' never passes it (--pcr 0 is rejected)
		o.PCR = limits.DefaultLaunchPCR
	}
	// Checked now, not when the launch event is recorded after boot.
	if err := limits.CheckLaunchPCR(o.PCR); err != nil {
		return nil, fmt.Errorf("%w (attestd's --launch-pcr)", err)
	}
	if o.Pod {
		if o.Stdin != nil {
			return nil, errors.New("a pod VM has no stdin")
		}
	}
	if err := o.ValidateWorkload(); err != nil {
		return nil, err
	}
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	// One sandbox id from the start: QEMU's name, its cgroup, the log lines,
	// the launch event, attestd's records, the guest's hostname and --report.
	sandboxID := o.SandboxID
	if sandboxID == "" {
		var err error
		if sandboxID, err = newSandboxID(o.random()); err != nil {
			return nil, err
		}
	} else if !ValidSandboxID(sandboxID) {
		return nil, fmt.Errorf("sandbox id %q: want 32 lowercase hex digits", sandboxID)
	}
	accel, cmdline, err := o.accelAndCmdline()
	if err != nil {
		return nil, err
	}

	// Step 2 (before 1, which needs the digests): pin and measure.
	kernel, kernelPath, err := pinKernel(ctx, &o)
	if err != nil {
		return nil, err
	}
	defer kernel.Close()
	initrd, err := pinInitrd(ctx, &o)
	if err != nil {
		return nil, err
	}
	defer initrd.Close()
	o.progress("measuring image %s", o.Image)
	img, err := measure.OpenImage(ctx, o.Image, measure.ImageOptions{Pin: true})
	if err != nil {
		return nil, err // it says "image PATH: ..."
	}
	defer img.Close()
	volDisks, err := o.volumeDisks(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, d := range volDisks {
			d.Close()
		}
	}()

	// Step 1: signatures, before anything boots.
	arts := []artifactRef{{"kernel", kernelPath, kernel.Digest, ""}, {"image", o.Image, img.ManifestDigest, img.DigestHint()}}
	if o.Initrd != "" {
		arts = append(arts, artifactRef{"initrd", o.Initrd, initrd.Digest, ""})
	}
	if len(o.Signers) == 0 {
		o.warn("no --signer given: signatures are checked by attestd's policy only (before boot, and again when attesting)")
	} else {
		o.progress("verifying signatures of %d artifacts", len(arts))
	}
	sigs, err := checkSignatures(ctx, arts, o.Signers)
	if err != nil {
		return nil, err
	}

	// The host TPM and its identity, before booting, so a TPM problem costs no boot.
	t := o.HostTPM
	if t == nil {
		if t, err = tpm.Open(ctx, o.TPM); err != nil {
			return nil, fmt.Errorf("host TPM: %w", err)
		}
		defer t.Close()
	}
	if w := t.AccessWarning(); w != "" {
		o.warn("%s", w)
	}
	ek, err := t.EKPublic(ctx)
	if err != nil {
		return nil, fmt.Errorf("host TPM: %w", err)
	}
	nodeID := limits.NodeID(ek)
	if _, err := t.LoadAK(ctx); err != nil {
		return nil, fmt.Errorf("host TPM has no attestation key yet: run 'launcher enroll' first (%w)", err)
	}
	client, err := attestclient.Dial(o.Attestd)
	if err != nil {
		return nil, fmt.Errorf("attestd: %w", err)
	}
	defer client.Close()

	// Still before boot: does the policy allow these artifacts at all?
	pbSigs := make([]*bulwarkv1.ArtifactSignature, 0, len(sigs))
	for _, s := range sigs {
		pbSigs = append(pbSigs, &bulwarkv1.ArtifactSignature{Artifact: s.Artifact, Signature: s.Signature, Payload: s.Payload})
	}
	// The template a clone would resume from is part of what the policy
	// judges: it is chosen now, and loaded (and checked) before the boot.
	cfg := o.sandboxConfig(kernel, initrd, accel, cmdline)
	o.workloadConfig(&cfg, volDisks)
	tplDir, tplInfo, err := o.findTemplate(cfg)
	if err != nil {
		return nil, err
	}
	o.progress("asking attestd whether policy %q allows these artifacts", o.Policy)
	var wl measure.LaunchEvent
	o.workloadEvent(&wl, volDisks)
	pf, err := client.Preflight(ctx, &bulwarkv1.PreflightRequest{
		NodeId: nodeID, Policy: o.Policy, Kernel: kernel.Digest, Initrd: initrd.Digest,
		Image: img.ManifestDigest, ImageConfig: img.ConfigDigest, Cmdline: cmdline, Args: o.Args, Signatures: pbSigs,
		TemplateRecipe: tplInfo.RecipeDigest, TemplateRam: tplInfo.RAM.Digest, TemplateState: tplInfo.State.Digest,
		EnvKeys: wl.EnvKeys, EnvDigest: wl.EnvDigest, WorkingDir: wl.WorkingDir, User: wl.User, Network: wl.Network, Ports: wl.Ports,
		Volumes: wl.Volumes,
	})
	if err != nil {
		return nil, fmt.Errorf("%w%s", attestdError("preflight", err), enrollHint(err))
	}
	if !pf.GetAllow() {
		return nil, fmt.Errorf("%w: policy %q does not allow it:\n  - %s", ErrRefused, o.Policy, strings.Join(pf.GetReasons(), "\n  - "))
	}

	// Step 3: boot.
	scratch, err := o.scratchDisks(ctx, sandboxID)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, d := range scratch {
			d.File.Close() // QEMU has its own descriptor
		}
	}()
	cfg.Scratch = scratch
	v1img, err := img.V1Image()
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	o.progress("building the image disk (erofs, read-only)")
	disk, err := kvm.BuildImageDisk(ctx, v1img, kvm.ImageOptions{Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("image disk: %w", err)
	}
	defer disk.Close()
	o.progress("image disk %s (%d KiB)", disk.Digest, disk.Size>>10)
	cfg.Name, cfg.Image, cfg.Pod = sandboxID, disk.File, o.Pod
	tpl, releaseTpl, err := o.loadTemplate(tplDir)
	if err != nil {
		return nil, err
	}
	defer releaseTpl()
	if tpl != nil && (tpl.Info.RecipeDigest != tplInfo.RecipeDigest || tpl.Info.RAM.Digest != tplInfo.RAM.Digest || tpl.Info.State.Digest != tplInfo.State.Digest) {
		return nil, fmt.Errorf("template %q changed during the launch (made again?): launch again", tpl.Info.Name)
	}
	cfg.Template = tpl
	if tpl != nil {
		o.progress("resuming a clone of template %q (%s)", tpl.Info.Name, accel)
	} else {
		o.progress("booting the sandbox (%s)", accel)
	}
	// The sandbox outlives ctx: when ctx ends (Ctrl-C) each step below fails
	// and aborts it, and a running workload is stopped gracefully
	// (waitWorkload) rather than killed with the VM.
	bootStart := time.Now()
	sb, err := kvm.Start(context.WithoutCancel(ctx), cfg)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	started := false
	defer func() {
		if !started {
			sb.Close()
		}
	}()
	res := &Result{SandboxID: sandboxID, Accel: sb.Accel(), ImageDigest: img.ManifestDigest}
	if tpl != nil {
		res.Template = tpl.Info.Name
	}
	hostLog := NewHostLog(filepath.Join(o.StateDir, "launch"), o.PCR)
	recorded := false // the launch event is in the host log
	fail := func(err error) (*Launched, error) {
		sb.Abort(err.Error())
		if recorded { // the sandbox ends here: say so in the log
			ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
			defer cancel()
			if _, eerr := hostLog.End(ectx, t, measure.EndFailed, res.SandboxID); eerr != nil {
				o.warn("the end of sandbox %s is not recorded in the launch log: %v", res.SandboxID, eerr)
			}
		}
		return &Launched{o: o, sb: sb, res: res}, err
	}

	// Step 4: the guest's key.
	guestKey, err := sb.GuestKey(ctx)
	if err != nil {
		return fail(fmt.Errorf("sandbox: %w", err))
	}

	// Step 5: record.
	ev := &measure.LaunchEvent{
		SandboxID: res.SandboxID, Policy: o.Policy,
		Kernel: kernel.Digest, Initrd: initrd.Digest,
		Cmdline: cmdline, CmdlineDigest: measure.DigestCmdline(measure.SHA256, cmdline),
		Image: img.ManifestDigest, ImageConfig: img.ConfigDigest, ImageDisk: disk.Digest,
		Args: o.Args, GuestPublicKey: guestKey, Time: o.now().UTC().Truncate(time.Second),
	}
	if tpl != nil {
		ev.TemplateRecipe, ev.TemplateRAM, ev.TemplateState = tpl.Info.RecipeDigest, tpl.Info.RAM.Digest, tpl.Info.State.Digest
	}
	o.workloadEvent(ev, volDisks)
	o.progress("recording launch event for sandbox %s in PCR %d", res.SandboxID, o.PCR)
	if _, err := hostLog.Append(ctx, t, ev); err != nil {
		return fail(err)
	}
	recorded = true

	// Step 6: attest.
	o.progress("attesting to %s (policy %q)", o.Attestd.Addr, o.Policy)
	fwLog, err := firmwareLog(t.Spec(), FirmwareLogPath)
	if err != nil {
		return fail(err)
	}
	ar, err := attestHost(ctx, client, hostLog, t, quotedPCRs(o.PCR, fwLog), &bulwarkv1.AttestRequest{
		NodeId: nodeID, FirmwareEventLog: fwLog, SandboxId: res.SandboxID, Signatures: pbSigs,
		// Secrets are released by attestation id below: no token to sign.
		OmitToken: true, ReattestIntervalSeconds: uint32(o.ReattestInterval / time.Second),
	})
	if err != nil {
		return fail(err)
	}
	res.AttestationID, res.Policy = ar.GetAttestationId(), ar.GetPolicy()
	if ar.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
		return fail(fmt.Errorf("%w by policy %q (attestation %s):\n  - %s", ErrDenied, ar.GetPolicy(), ar.GetAttestationId(),
			strings.Join(ar.GetReasons(), "\n  - ")))
	}
	o.progress("attestation %s: allowed by policy %q", ar.GetAttestationId(), ar.GetPolicy())

	// Step 7: release, then run.
	rel, err := client.Release(ctx, ar.GetAttestationId())
	if err != nil {
		return fail(attestdError("release", err))
	}
	if rel.GetSandboxId() != res.SandboxID {
		return fail(fmt.Errorf("attestd released secrets for sandbox %q, not this one (%s)", rel.GetSandboxId(), res.SandboxID))
	}
	secrets := make([]kvm.Secret, 0, len(rel.GetSecrets()))
	for _, s := range rel.GetSecrets() {
		secrets = append(secrets, kvm.Secret{Name: s.GetName(), Wrapped: s.GetWrapped()})
		res.Secrets = append(res.Secrets, s.GetName())
	}
	o.progress("forwarding %d wrapped secrets; starting the workload", len(secrets))
	if err := sb.StartWorkload(ctx, secrets, o.Args); err != nil {
		return fail(fmt.Errorf("sandbox: %w", err))
	}
	res.StartMillis = time.Since(bootStart).Milliseconds()
	if ports, err := sb.Ports(ctx); err != nil {
		o.warn("the port forwards QEMU listens on are not known: %v", err)
	} else {
		for _, p := range ports {
			res.Ports = append(res.Ports, fmt.Sprintf("%s:%d->%d/tcp", p.HostIP, p.HostPort, p.GuestPort))
		}
		if len(res.Ports) > 0 { // shown even without progress: a port QEMU chose is known only now
			if w := o.Progress; w != nil {
				o.progress("forwarding %s", strings.Join(res.Ports, ", "))
			} else if o.Stderr != nil {
				fmt.Fprintf(o.Stderr, "launcher: forwarding %s\n", strings.Join(res.Ports, ", "))
			}
		}
	}
	o.progress("workload running %d ms after the sandbox started (%s)", res.StartMillis, map[bool]string{true: "clone", false: "cold boot"}[tpl != nil])
	started = true
	l := &Launched{o: o, sb: sb, res: res}
	if o.Pod {
		l.pod = &podLaunch{nodeID: nodeID, event: *ev, diskDigest: disk.Digest, diskSize: disk.Size}
		for _, s := range pbSigs {
			if s.GetArtifact() != "image" {
				l.pod.sigs = append(l.pod.sigs, s)
			}
		}
	}
	return l, nil
}

// DefaultStopGrace is how long an interrupted launch gives the workload to
// exit after SIGTERM before it is killed (Options.StopGrace).
const DefaultStopGrace = 10 * time.Second

// ErrInterrupted is wrapped by Run's error when ctx ended (Ctrl-C, SIGTERM)
// while the workload ran: it was stopped gracefully; Result.ExitCode is its
// exit status.
var ErrInterrupted = errors.New("interrupted")

// waitWorkload waits for the workload to exit. When ctx ends first (the
// launcher was interrupted), the workload gets SIGTERM and StopGrace to
// exit before it is killed, and its exit status is still collected.
func (o *Options) waitWorkload(ctx context.Context, sb *kvm.Sandbox) (int, error) {
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := sb.Wait(context.WithoutCancel(ctx))
		done <- result{code, err}
	}()
	select {
	case r := <-done:
		return r.code, r.err
	case <-ctx.Done():
	}
	o.progress("interrupted: stopping the workload (SIGTERM, then SIGKILL after %v)", o.StopGrace)
	if err := sb.Stop(o.StopGrace); err != nil {
		sb.Abort("interrupted: " + err.Error())
	}
	// The agent kills everything when the grace period ends; past that
	// (and a margin for the exit status to come back) the VM goes.
	t := time.NewTimer(o.StopGrace + 10*time.Second)
	defer t.Stop()
	select {
	case r := <-done:
		return r.code, r.err
	case <-t.C:
		sb.Abort("interrupted: the workload did not exit after SIGKILL")
		r := <-done
		return r.code, r.err
	}
}

// ValidSandboxID reports whether id has the form of a sandbox id: 32
// lowercase hex digits.
func ValidSandboxID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// NewSandboxID is a fresh random sandbox id: 32 hex digits.
func NewSandboxID() (string, error) { return newSandboxID(rand.Reader) }

func newSandboxID(r io.Reader) (string, error) {
	id := make([]byte, 16)
	if _, err := io.ReadFull(r, id); err != nil {
		return "", err
	}
	return hex.EncodeToString(id), nil
}

// pinInitrd pins the given base initramfs, or builds the default one.
func pinInitrd(ctx context.Context, o *Options) (*measure.Pinned, error) {
	if o.Initrd != "" {
		o.progress("measuring initrd %s", o.Initrd)
		p, err := measure.Pin(ctx, o.Initrd, measure.SHA256)
		if err != nil {
			return nil, fmt.Errorf("initrd: %w", err)
		}
		return p, nil
	}
	if o.Kernel != "" {
		return nil, errors.New("with --kernel, give --initrd too (built for that kernel with 'launcher initrd build')")
	}
	agentBytes, _, err := ReadAgent(o.Agent)
	if err != nil {
		return nil, fmt.Errorf("guest agent: %w (build it with 'make build', or give --agent or --initrd)", err)
	}
	hk, err := kvm.FindHostKernel()
	if err != nil {
		return nil, err
	}
	o.progress("building the base initramfs (agent + %s modules)", hk.Version)
	data, err := kvm.BuildBaseInitramfs(kvm.BaseOptions{Agent: agentBytes, KernelVersion: hk.Version})
	if err != nil {
		return nil, fmt.Errorf("base initramfs: %w", err)
	}
	return measure.PinBytes("initrd", data, measure.SHA256)
}

// enrollHint adds advice when attestd does not know the host.
func enrollHint(err error) string {
	if strings.Contains(err.Error(), "NotFound") || strings.Contains(err.Error(), "not enrolled") || strings.Contains(err.Error(), "unknown node") {
		return " (is this host enrolled? run 'launcher enroll')"
	}
	return ""
}

// ReadAgent reads the guest agent binary at path or, when path is "",
// bulwark-agent beside the running executable (where 'make build' puts
// both), and returns its bytes and the path read. An empty file is an
// error that says so (kvm.BuildBaseInitramfs would only see no bytes).
func ReadAgent(path string) ([]byte, string, error) {
	if path == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, "", err
		}
		path = filepath.Join(filepath.Dir(exe), "bulwark-agent")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, path, err
	}
	if len(b) == 0 {
		return nil, path, fmt.Errorf("%s is empty (0 bytes), not the static bulwark-agent binary", path)
	}
	return b, path, nil
}
