package launch

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/measure"
)

// Network modes of Options.Network.
const (
	NetworkNone = "none"
	NetworkUser = "user"
	NetworkTap  = "tap"
)

// ValidateWorkload checks and normalizes the workload inputs of o (Env, TTY,
// WorkingDir, User, Network, Ports), the one place they are checked for
// every caller: 'launcher run' (which names its flags in the errors) as
// much as a host service passing Options. Env entries are "KEY=VALUE"; a
// key given twice keeps its last value at its first place (docker run's
// --env-file then -e). Network "" is NetworkNone. Errors name the flag.
func (o *Options) ValidateWorkload() error {
	env, err := normalizeEnv(o.Env)
	if err != nil {
		return err
	}
	o.Env = env
	if o.TTY != nil {
		if err := o.TTY.Validate(); err != nil {
			return fmt.Errorf("-t: %w", err)
		}
	}
	if o.WorkingDir != "" {
		if err := measure.CheckWorkingDir(o.WorkingDir); err != nil {
			return fmt.Errorf("-w/--workdir: %w", err)
		}
	}
	if o.User != "" {
		if err := measure.CheckUser(o.User); err != nil {
			return fmt.Errorf("--user: %w", err)
		}
	}
	switch o.Network {
	case "":
		o.Network = NetworkNone
	case NetworkNone, NetworkUser:
	case NetworkTap:
		if o.NetNS == "" {
			return errors.New("--net tap: needs the pod's network namespace (NetNS: the host service's netns field, which containerd's shim fills in for a pod with its own network)")
		}
		if err := kvm.CheckNetNS(o.NetNS); err != nil {
			return fmt.Errorf("netns: %w", err)
		}
	default:
		return fmt.Errorf("--net %q: want none, user or tap", o.Network)
	}
	if o.NetNS != "" && o.Network != NetworkTap {
		return fmt.Errorf("netns: a network namespace is for --net tap only (not --net %s)", o.Network)
	}
	if len(o.Ports) > 0 && o.Network != NetworkUser {
		return errors.New("-p/--publish: port forwards need --net user")
	}
	if len(o.Ports) > measure.MaxPorts {
		return fmt.Errorf("-p/--publish: %d port forwards, the limit is %d", len(o.Ports), measure.MaxPorts)
	}
	seen := map[string]bool{}
	for i, s := range o.Ports {
		p, err := measure.ParsePort(s)
		if err != nil {
			return fmt.Errorf("-p/--publish: %w", err)
		}
		if k := netip.AddrPortFrom(p.HostIP, p.HostPort).String(); p.HostPort != 0 && seen[k] {
			return fmt.Errorf("-p/--publish: host address %s forwarded twice", k)
		} else {
			seen[k] = true
		}
		o.Ports[i] = p.String()
	}
	return o.validateVolumes()
}

// validateVolumes checks and normalizes Volumes ("HOSTDIR:TARGET:ro",
// HOSTDIR cleaned) and Tmpfs ("TARGET:size=BYTES", or "TARGET" for the
// kernel's default size).
func (o *Options) validateVolumes() error {
	if len(o.Volumes) > measure.MaxVolumes {
		return fmt.Errorf("--volume: %d volumes, the limit is %d", len(o.Volumes), measure.MaxVolumes)
	}
	if len(o.Tmpfs) > measure.MaxVolumes {
		return fmt.Errorf("--tmpfs: %d mounts, the limit is %d", len(o.Tmpfs), measure.MaxVolumes)
	}
	targets := map[string]bool{}
	target := func(flag, t string) error {
		check := measure.CheckVolumeTarget
		if flag == "--scratch" {
			check = measure.CheckScratchTarget
		}
		if err := check(t); err != nil {
			return fmt.Errorf("%s: %w", flag, err)
		}
		if targets[t] {
			return fmt.Errorf("%s: %s mounted twice", flag, t)
		}
		targets[t] = true
		return nil
	}
	for i, v := range o.Volumes {
		host, guest, mode, err := splitVolume(v)
		if err != nil {
			return err
		}
		if err := target("--volume", guest); err != nil {
			return err
		}
		o.Volumes[i] = host + ":" + guest + ":" + mode
	}
	for i, t := range o.Tmpfs {
		guest, size, err := parseTmpfs(t)
		if err != nil {
			return err
		}
		if err := target("--tmpfs", guest); err != nil {
			return err
		}
		o.Tmpfs[i] = guest
		if size > 0 {
			o.Tmpfs[i] = fmt.Sprintf("%s:size=%d", guest, size)
		}
	}
	if len(o.Scratch) > measure.MaxScratch {
		return fmt.Errorf("--scratch: %d scratch disks, the limit is %d", len(o.Scratch), measure.MaxScratch)
	}
	for i, sc := range o.Scratch {
		guest, size, err := parseScratch(sc)
		if err != nil {
			return err
		}
		if err := target("--scratch", guest); err != nil {
			return err
		}
		o.Scratch[i] = fmt.Sprintf("%s:size=%d", guest, size)
	}
	if len(o.Volumes) > 0 && o.Template != TemplateAuto && o.Template != TemplateNone {
		return fmt.Errorf("--volume with --template %q: a clone has no disk slot for a volume (templates are made without one); boot cold (--template none, or leave --template out)", o.Template)
	}
	return nil
}

// splitVolume splits "HOSTDIR:TARGET:ro": HOSTDIR absolute (cleaned), the
// mode ro (a volume is a measured, read-only image of HOSTDIR).
func splitVolume(v string) (host, guest, mode string, err error) {
	parts := strings.Split(v, ":")
	if len(parts) == 2 {
		parts = append(parts, "")
	}
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("--volume %q: want HOSTDIR:PATH:ro", trunc(v, 64))
	}
	host, guest, mode = parts[0], parts[1], parts[2]
	if mode != "ro" {
		return "", "", "", fmt.Errorf("--volume %q: only read-only volumes (HOSTDIR:PATH:ro): a volume is a measured image of HOSTDIR; --tmpfs PATH gives writable scratch", trunc(v, 64))
	}
	if !filepath.IsAbs(host) || strings.IndexByte(host, 0) >= 0 || len(host) > measure.MaxWorkingDir {
		return "", "", "", fmt.Errorf("--volume %q: the host directory must be an absolute path", trunc(v, 64))
	}
	return filepath.Clean(host), guest, mode, nil
}

// parseTmpfs parses "TARGET[:size=N]", N bytes with an optional k, m or g
// suffix (powers of 1024).
func parseTmpfs(t string) (string, int64, error) {
	guest, opts, hasOpts := strings.Cut(t, ":")
	if !hasOpts {
		return guest, 0, nil
	}
	s, ok := strings.CutPrefix(opts, "size=")
	if !ok {
		return "", 0, fmt.Errorf("--tmpfs %q: want PATH or PATH:size=N (k, m, g suffixes)", trunc(t, 64))
	}
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1<<10, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "m"):
		mult, s = 1<<20, strings.TrimSuffix(s, "m")
	case strings.HasSuffix(s, "g"):
		mult, s = 1<<30, strings.TrimSuffix(s, "g")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > measure.MaxTmpfsBytes/mult {
		return "", 0, fmt.Errorf("--tmpfs %q: size must be 1 byte to 1 TiB (e.g. size=64m)", trunc(t, 64))
	}
	return guest, n * mult, nil
}

// DefaultScratchSize is the size of a scratch disk given without size=.
const DefaultScratchSize = 1 << 30

// parseScratch parses "TARGET[:size=N]", N with an optional k, m, g or t
// suffix (powers of 1024): 16m to 1024g, a whole number of MiB
// (measure.CheckScratchSize).
func parseScratch(s string) (string, int64, error) {
	guest, opts, hasOpts := strings.Cut(s, ":")
	if !hasOpts {
		return guest, DefaultScratchSize, nil
	}
	v, ok := strings.CutPrefix(opts, "size=")
	if !ok {
		return "", 0, fmt.Errorf("--scratch %q: want PATH or PATH:size=N (k, m, g, t suffixes)", trunc(s, 64))
	}
	n, err := measure.ParseSize(v)
	if err == nil {
		err = measure.CheckScratchSize(n)
	}
	if err != nil {
		return "", 0, fmt.Errorf("--scratch %q: %w", trunc(s, 64), err)
	}
	return guest, n, nil
}

// scratchDisks makes the scratch disks, in order, in RunDir (kept until
// the sandbox is removed with it) or in StateDir/scratch, unlinked at
// once (the space is the host's again when the sandbox ends). Close their
// files once QEMU has them.
func (o *Options) scratchDisks(ctx context.Context, sandboxID string) ([]kvm.ScratchDisk, error) {
	if len(o.Scratch) == 0 {
		return nil, nil
	}
	dir, keep := o.RunDir, true
	if dir == "" {
		dir, keep = filepath.Join(o.StateDir, "scratch"), false
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("scratch disk: %w", err)
		}
	}
	var disks []kvm.ScratchDisk
	for i, sc := range o.Scratch {
		guest, size, _ := parseScratch(sc) // validated
		name := "scratch" + strconv.Itoa(i)
		if !keep {
			name = sandboxID + "-" + name
		}
		p := filepath.Join(dir, name)
		o.progress("making scratch disk %s for %s (ext4, %d MiB, writable)", p, guest, size>>20)
		f, err := kvm.CreateScratchDisk(ctx, p, size)
		if err == nil && !keep {
			err = os.Remove(p)
		}
		if err != nil {
			if f != nil {
				f.Close()
			}
			for _, d := range disks {
				d.File.Close()
			}
			return nil, fmt.Errorf("scratch disk for %s: %w", guest, err)
		}
		disks = append(disks, kvm.ScratchDisk{File: f, Target: guest, Size: size})
	}
	return disks, nil
}

// volumeDisks builds the read-only volumes' disks, in order (closed by
// the caller).
func (o *Options) volumeDisks(ctx context.Context) ([]*kvm.ImageDisk, error) {
	var disks []*kvm.ImageDisk
	for _, v := range o.Volumes {
		host, guest, _, _ := splitVolume(v) // validated
		o.progress("building volume %s for %s (erofs, read-only)", host, guest)
		d, err := kvm.BuildVolumeDisk(ctx, host)
		if err != nil {
			for _, d := range disks {
				d.Close()
			}
			return nil, fmt.Errorf("volume %s: %w", host, err)
		}
		o.progress("volume %s: disk %s (%d KiB)", guest, d.Digest, d.Size>>10)
		disks = append(disks, d)
	}
	return disks, nil
}

// normalizeEnv checks env ("KEY=VALUE" entries) and returns it with each
// key once: its last value, at its first place.
func normalizeEnv(env []string) ([]string, error) {
	var out []string
	idx := map[string]int{}
	total := 0
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("-e/--env %q: want KEY=VALUE", trunc(kv, 64))
		}
		if err := measure.CheckEnvKey(k); err != nil {
			return nil, fmt.Errorf("-e/--env: %w", err)
		}
		if err := measure.CheckEnvValue(v); err != nil {
			return nil, fmt.Errorf("-e/--env %s: %w", k, err)
		}
		if i, ok := idx[k]; ok {
			total -= len(out[i])
			out[i] = kv
		} else {
			idx[k] = len(out)
			out = append(out, kv)
		}
		total += len(kv)
		if len(out) > measure.MaxEnv {
			return nil, fmt.Errorf("-e/--env: more than %d variables", measure.MaxEnv)
		}
		if total > measure.MaxEnvTotal {
			return nil, fmt.Errorf("-e/--env: more than %d bytes of variables", measure.MaxEnvTotal)
		}
	}
	return out, nil
}

// trunc shortens s for an error message.
func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// workloadEvent fills in the launch event's workload fields from o
// (validated) and its volumes' disks.
func (o *Options) workloadEvent(ev *measure.LaunchEvent, disks []*kvm.ImageDisk) {
	for i, v := range o.Volumes {
		_, guest, _, _ := splitVolume(v)
		ev.Volumes = append(ev.Volumes, measure.Volume{Kind: measure.VolumeReadOnly, Target: guest, Digest: disks[i].Digest}.String())
	}
	for _, t := range o.Tmpfs {
		guest, size, _ := parseTmpfs(t)
		ev.Volumes = append(ev.Volumes, measure.Volume{Kind: measure.VolumeTmpfs, Target: guest, Size: size}.String())
	}
	for _, sc := range o.Scratch {
		guest, size, _ := parseScratch(sc)
		ev.Volumes = append(ev.Volumes, measure.Volume{Kind: measure.VolumeScratch, Target: guest, Size: size}.String())
	}
	if len(o.Env) > 0 {
		ev.EnvKeys, ev.EnvDigest = measure.EnvKeys(o.Env), measure.EnvDigest(measure.SHA256, o.Env)
	}
	ev.WorkingDir, ev.User = o.WorkingDir, o.User
	switch o.Network {
	case NetworkUser:
		ev.Network, ev.Ports = measure.NetworkUser, slices.Clone(o.Ports)
	case NetworkTap:
		ev.Network = measure.NetworkTap // the namespace is where it runs, not what it is: not recorded
	}
}

// workloadConfig fills in the sandbox's workload fields from o (validated)
// and its volumes' disks.
func (o *Options) workloadConfig(cfg *kvm.Config, disks []*kvm.ImageDisk) {
	cfg.Env, cfg.WorkingDir, cfg.User = slices.Clone(o.Env), o.WorkingDir, o.User
	cfg.Stdin = o.Stdin
	if o.TTY != nil {
		ws := *o.TTY
		cfg.TTY = &ws
	}
	for i, v := range o.Volumes {
		_, guest, _, _ := splitVolume(v)
		cfg.Volumes = append(cfg.Volumes, kvm.VolumeDisk{File: disks[i].File, Target: guest})
	}
	for _, t := range o.Tmpfs {
		guest, size, _ := parseTmpfs(t)
		cfg.Tmpfs = append(cfg.Tmpfs, kvm.TmpfsMount{Target: guest, Size: size})
	}
	if o.Network == NetworkTap {
		cfg.Network, cfg.NetNS = kvm.NetworkTap, o.NetNS
		return
	}
	if o.Network != NetworkUser {
		return
	}
	cfg.Network = kvm.NetworkUser
	for _, s := range o.Ports {
		p, _ := measure.ParsePort(s) // validated
		cfg.Ports = append(cfg.Ports, kvm.PortForward{HostIP: p.HostIP, HostPort: p.HostPort, GuestPort: p.GuestPort})
	}
}
