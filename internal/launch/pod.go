package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/kvm/channel"
	"github.com/bulwark-project/bulwark/measure"
)

// podLaunch is what a pod VM's launch keeps to add containers: the pod's
// launch event (kernel, initrd, command line, network, guest key, the
// template of a clone), the signatures of its kernel and initrd, its
// first container's disk and its image slots.
type podLaunch struct {
	nodeID     string
	event      measure.LaunchEvent
	sigs       []*bulwarkv1.ArtifactSignature
	diskDigest string
	diskSize   int64

	mu    sync.Mutex
	taken []bool // by slot index-1: reserved for a container being added, or filled
	first bool
}

// ErrPodFull is wrapped when a pod has no image slot left.
var ErrPodFull = errors.New("the pod VM has no image slot left")

// reserve takes the lowest free image slot of a pod with n slots for a
// container being added: its index (1..n), or ErrPodFull saying what to do.
func (p *podLaunch) reserve(n int) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.taken == nil {
		p.taken = make([]bool, n)
	}
	for i, t := range p.taken {
		if !t {
			p.taken[i] = true
			return i + 1, nil
		}
	}
	return 0, fmt.Errorf("%w: all %d are taken, one by each container added to the pod that runs or whose task was not deleted yet (a slot is freed once its container has exited and its task is deleted, which the CRI does at once; ctr task rm by hand): stop a container of the pod, or run this one in another pod",
		ErrPodFull, len(p.taken))
}

// release frees slot index: reserved for a container that did not get
// it (refused, or failed before its disk was put in the slot), or whose
// container was removed.
func (p *podLaunch) release(index int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if index >= 1 && index <= len(p.taken) {
		p.taken[index-1] = false
	}
}

// hold marks slot index taken in a pod of n slots: a container of a pod
// taken over (AdoptPod) holds it until it is removed.
func (p *podLaunch) hold(n, index int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.taken == nil {
		p.taken = make([]bool, n)
	}
	if index >= 1 && index <= len(p.taken) {
		p.taken[index-1] = true
	}
}

// Container is a container of a pod VM.
type Container struct {
	// Index is its slot (0: the launch's own image); EventID the id of its
	// launch event (the pod's for container 0), AttestationID attestd's
	// verdict on it; ImageDigest its image's manifest digest.
	Index         int
	EventID       string
	AttestationID string
	ImageDigest   string
	c             *kvm.Container
	sb            *kvm.Sandbox
}

// Wait returns the container's exit code once it exited.
func (c *Container) Wait(ctx context.Context) (int, error) { return c.c.Wait(ctx, c.sb) }

// Done is closed when the container's process has exited.
func (c *Container) Done() <-chan struct{} { return c.c.Done() }

// IsPod reports whether the launch is a pod VM's.
func (l *Launched) IsPod() bool { return l.pod != nil }

// StartFirstContainer runs the pod's first container (co.Name) from the
// launch's own image, with the launch's Args, Env, WorkingDir and User:
// what the pod's launch event recorded and attestd judged; co gives its
// output's writers, stdin and terminal (its other fields are not used).
func (l *Launched) StartFirstContainer(ctx context.Context, co ContainerOptions) (*Container, error) {
	name := co.Name
	if l.pod == nil {
		return nil, errors.New("not a pod VM")
	}
	l.pod.mu.Lock()
	if l.pod.first {
		l.pod.mu.Unlock()
		return nil, errors.New("the pod's first container was started already")
	}
	l.pod.first = true
	l.pod.mu.Unlock()
	c, err := l.sb.StartContainer(ctx, channel.ContainerStart{Index: 0, Name: name, DiskDigest: l.pod.diskDigest, DiskSize: l.pod.diskSize,
		Args: l.o.Args, Env: l.o.Env, WorkingDir: l.o.WorkingDir, User: l.o.User, Stdin: co.Stdin, TTY: co.TTY}, co.Stdout, co.Stderr)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", name, err)
	}
	return &Container{Index: 0, EventID: l.res.SandboxID, AttestationID: l.res.AttestationID, ImageDigest: l.res.ImageDigest, c: c, sb: l.sb}, nil
}

// ContainerOptions describe a container added to a pod VM.
type ContainerOptions struct {
	// Name is the container's name (1..128 of [A-Za-z0-9._-]).
	Name string
	// Image is its OCI image (layout directory or archive).
	Image string
	// Args, Env, WorkingDir and User are as Options' (over the image's).
	Args       []string
	Env        []string
	WorkingDir string
	User       string
	// Stdout and Stderr receive its output.
	Stdout, Stderr io.Writer
	// Stdin and TTY give its process a stdin and a terminal of this
	// initial size (podtty.go). Not recorded in its launch event, as
	// Options.Stdin and TTY are not.
	Stdin bool
	TTY   *kvm.WindowSize
	// Progress gets one line per step (optional).
	Progress io.Writer
	// EventID, when set, is given the id of the container's launch event
	// before the event is recorded, so that whoever finds the container
	// never ran (a host service restarted meanwhile) can write its END
	// (an END for an id the launch log does not hold is passed over).
	EventID func(id string)
}

// AddContainer adds a container to a running pod VM. Its image is
// measured and its signatures checked as a launch's; its disk is built;
// a launch event of its own (a fresh id, the pod's kernel, initrd,
// command line, network and guest key, the container's image, arguments
// and settings) is recorded in the launch log and the launch PCR, and
// attested: attestd judges it by the pod's policy as any launch (a
// clone pod's containers' events name its template too). Only when
// allowed is the disk put in the pod's image slot (sealed) and the
// container started; a refusal returns the policy's reasons, nothing of
// the container reaches the guest, and its slot stays free for the next
// container. The pod's secrets were released at its launch: the
// container sees them at /run/secrets. With Options.ReattestInterval,
// attestd keeps the container's launch event as it keeps the pod's, and
// judges it again (continuous attestation).
//
// Once its launch event is recorded, a container that does not start
// (attestation failed or denied, the slot or the start failed) gets its
// END record (measure.EndFailed) before AddContainer returns, so attestd
// never judges it alive; the END of a container that ran is its
// caller's to record when it ends (RecordEnd with its EventID).
func (l *Launched) AddContainer(ctx context.Context, co ContainerOptions) (_ *Container, retErr error) {
	if l.pod == nil {
		return nil, errors.New("not a pod VM")
	}
	if l.o.HostTPM == nil {
		return nil, errors.New("adding a container needs the host service's TPM")
	}
	progress := func(format string, a ...any) {
		if co.Progress != nil {
			fmt.Fprintf(co.Progress, format+"\n", a...)
		}
	}
	wo := Options{Env: co.Env, WorkingDir: co.WorkingDir, User: co.User, Args: co.Args}
	if err := wo.ValidateWorkload(); err != nil {
		return nil, err
	}
	for i, a := range co.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return nil, fmt.Errorf("argument %d contains a NUL byte", i)
		}
	}
	index, err := l.pod.reserve(l.sb.PodSlots())
	if err != nil {
		return nil, err
	}
	filled := false // once its disk is in the slot, the slot is the container's for good
	defer func() {
		if !filled {
			l.pod.release(index)
		}
	}()

	progress("measuring image %s", co.Image)
	img, err := measure.OpenImage(ctx, co.Image, measure.ImageOptions{Pin: true})
	if err != nil {
		return nil, err
	}
	defer img.Close()
	sigs, err := checkSignatures(ctx, []artifactRef{{"image", co.Image, img.ManifestDigest, img.DigestHint()}}, l.o.Signers)
	if err != nil {
		return nil, err
	}
	v1img, err := img.V1Image()
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	disk, err := kvm.BuildImageDisk(ctx, v1img, kvm.ImageOptions{Logger: l.o.Logger})
	if err != nil {
		return nil, fmt.Errorf("image disk: %w", err)
	}
	defer disk.Close()
	id, err := newSandboxID(l.o.random())
	if err != nil {
		return nil, err
	}
	pe := l.pod.event
	ev := &measure.LaunchEvent{
		SandboxID: id, Policy: l.o.Policy, Kernel: pe.Kernel, Initrd: pe.Initrd, Cmdline: pe.Cmdline, CmdlineDigest: pe.CmdlineDigest,
		Image: img.ManifestDigest, ImageConfig: img.ConfigDigest, ImageDisk: disk.Digest, Args: co.Args,
		GuestPublicKey: pe.GuestPublicKey, Time: l.o.now().UTC().Truncate(time.Second),
		Network: pe.Network, Ports: pe.Ports, WorkingDir: wo.WorkingDir, User: wo.User,
		// It runs in the pod's VM: a clone's, as the pod's event says.
		TemplateRecipe: pe.TemplateRecipe, TemplateRAM: pe.TemplateRAM, TemplateState: pe.TemplateState,
	}
	if len(wo.Env) > 0 {
		ev.EnvKeys, ev.EnvDigest = measure.EnvKeys(wo.Env), measure.EnvDigest(measure.SHA256, wo.Env)
	}
	if co.EventID != nil {
		co.EventID(id)
	}
	progress("recording launch event %s for container %s of pod %s in PCR %d", id, co.Name, l.res.SandboxID, l.o.PCR)
	t := l.o.HostTPM
	hostLog := NewHostLog(filepath.Join(l.o.StateDir, "launch"), l.o.PCR)
	if _, err := hostLog.Append(ctx, t, ev); err != nil {
		return nil, err
	}
	defer func() {
		if retErr == nil {
			return
		}
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
		defer cancel()
		if _, err := hostLog.End(ectx, t, measure.EndFailed, id); err != nil {
			l.o.warn("the end of container %s (launch event %s) is not recorded in the launch log: %v", co.Name, id, err)
		}
	}()
	client, err := attestclient.Dial(l.o.Attestd)
	if err != nil {
		return nil, fmt.Errorf("attestd: %w", err)
	}
	defer client.Close()
	fwLog, err := firmwareLog(t.Spec(), FirmwareLogPath)
	if err != nil {
		return nil, err
	}
	pbSigs := append([]*bulwarkv1.ArtifactSignature{}, l.pod.sigs...)
	for _, s := range sigs {
		pbSigs = append(pbSigs, &bulwarkv1.ArtifactSignature{Artifact: s.Artifact, Signature: s.Signature, Payload: s.Payload})
	}
	progress("attesting container %s (policy %q)", co.Name, l.o.Policy)
	ar, err := attestHost(ctx, client, hostLog, t, quotedPCRs(l.o.PCR, fwLog), &bulwarkv1.AttestRequest{
		NodeId: l.pod.nodeID, FirmwareEventLog: fwLog, SandboxId: id, Signatures: pbSigs, OmitToken: true,
		ReattestIntervalSeconds: uint32(l.o.ReattestInterval / time.Second), // kept and judged again, as the pod's own
	})
	if err != nil {
		return nil, err
	}
	if ar.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
		return nil, fmt.Errorf("%w by policy %q (attestation %s):\n  - %s", ErrDenied, ar.GetPolicy(), ar.GetAttestationId(),
			strings.Join(ar.GetReasons(), "\n  - "))
	}
	if err := l.sb.FillPodSlot(ctx, index, disk); err != nil {
		return nil, err
	}
	c, err := l.sb.StartContainer(ctx, channel.ContainerStart{Index: index, Name: co.Name, DiskDigest: disk.Digest, DiskSize: disk.Size,
		Args: co.Args, Env: wo.Env, WorkingDir: wo.WorkingDir, User: wo.User, Stdin: co.Stdin, TTY: co.TTY}, co.Stdout, co.Stderr)
	if err != nil {
		// Nothing of it runs: the agent forgets it and the slot is
		// emptied for the next container; if that fails, the slot stays
		// taken (its disk may still be mounted in the guest).
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
		defer cancel()
		if rerr := l.sb.RemoveContainer(rctx, index); rerr != nil {
			filled = true
			l.o.warn("pod slot %d stays taken: the container that failed to start in it was not removed: %v", index, rerr)
		}
		return nil, fmt.Errorf("container %s: %w", co.Name, err)
	}
	filled = true
	return &Container{Index: index, EventID: id, AttestationID: ar.GetAttestationId(), ImageDigest: img.ManifestDigest, c: c, sb: l.sb}, nil
}

// removeTimeout bounds the removal of a container from its pod's guest.
const removeTimeout = 15 * time.Second

// RemoveContainer forgets an ended container of the pod: the agent kills
// what is left in its root and unmounts it, and its image slot is emptied
// and free for the next container (AddContainer). It fails for a
// container still running. The pod's first container runs from the
// launch's own disk: it is forgotten, but frees no slot.
func (l *Launched) RemoveContainer(ctx context.Context, c *Container) error {
	if l.pod == nil {
		return errors.New("not a pod VM")
	}
	if err := l.sb.RemoveContainer(ctx, c.Index); err != nil {
		return err
	}
	if c.Index > 0 {
		l.pod.release(c.Index)
	}
	return nil
}

// KillContainer signals a container of the pod.
func (l *Launched) KillContainer(c *Container, sig int) error {
	return l.sb.KillContainer(c.Index, sig)
}

// ExecContainer runs a command in a container of the pod.
func (l *Launched) ExecContainer(ctx context.Context, c *Container, args []string, stdout, stderr io.Writer) (int, error) {
	return l.sb.ExecContainer(ctx, c.Index, args, stdout, stderr)
}

// ExecContainerWith is ExecContainer with stdin and/or a terminal.
func (l *Launched) ExecContainerWith(ctx context.Context, c *Container, args []string, opts kvm.ExecOptions, stdout, stderr io.Writer) (int, error) {
	return l.sb.ExecContainerWith(ctx, c.Index, args, opts, stdout, stderr)
}
