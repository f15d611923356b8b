package measure

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on the workload inputs a launch records beside its command (the
// launcher refuses larger ones before anything boots; the launch event
// refuses them too).
const (
	MaxEnv        = 128     // environment variables set over the image's
	MaxEnvKey     = 128     // bytes of one variable's name
	MaxEnvValue   = 8 << 10 // bytes of one variable's value
	MaxEnvTotal   = 64 << 10
	MaxWorkingDir = 4096
	MaxUser       = 256
	MaxPorts      = 32
)

// NetworkUser is LaunchEvent.Network for QEMU user-mode networking,
// NetworkTap for a tap joined to a pod's network namespace (CNI); "" is no
// network at all.
const (
	NetworkUser = "user"
	NetworkTap  = "tap"
)

// CheckEnvKey checks an environment variable's name: 1..MaxEnvKey bytes of
// printable ASCII other than '=' and space.
func CheckEnvKey(k string) error {
	if k == "" {
		return errors.New("empty variable name")
	}
	if len(k) > MaxEnvKey {
		return fmt.Errorf("variable name of %d bytes, the limit is %d", len(k), MaxEnvKey)
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f || c == '=' {
			return fmt.Errorf("variable name %q: byte %d is %q; want printable ASCII without '=' or spaces", truncate(k), i, c)
		}
	}
	return nil
}

// CheckEnvValue checks a variable's value: at most MaxEnvValue bytes of
// UTF-8 without NUL.
func CheckEnvValue(v string) error {
	if len(v) > MaxEnvValue {
		return fmt.Errorf("value of %d bytes, the limit is %d", len(v), MaxEnvValue)
	}
	if !utf8.ValidString(v) {
		return errors.New("value is not valid UTF-8")
	}
	if strings.IndexByte(v, 0) >= 0 {
		return errors.New("value contains a NUL byte")
	}
	return nil
}

// EnvKeys returns the sorted names of env, a list of "KEY=VALUE" entries.
func EnvKeys(env []string) []string {
	keys := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// EnvDigest is LaunchEvent.EnvDigest of env ("KEY=VALUE" entries, each key
// once): the digest, in algorithm a, of the entries sorted by key, each as
// a 4-byte big-endian length and its bytes; "" for no entries. A low-entropy
// value can be guessed from it: secrets belong in attestd's vault, not in -e.
func EnvDigest(a Alg, env []string) string {
	if len(env) == 0 {
		return ""
	}
	sorted := slices.Clone(env)
	slices.SortFunc(sorted, func(x, y string) int {
		kx, _, _ := strings.Cut(x, "=")
		ky, _, _ := strings.Cut(y, "=")
		return strings.Compare(kx, ky)
	})
	var b []byte
	for _, kv := range sorted {
		b = binary.BigEndian.AppendUint32(b, uint32(len(kv)))
		b = append(b, kv...)
	}
	return DigestBytes(a, b)
}

// CheckWorkingDir checks a working directory that replaces the image's: an
// absolute, clean path of at most MaxWorkingDir bytes, UTF-8 without NUL.
func CheckWorkingDir(d string) error {
	if len(d) > MaxWorkingDir {
		return fmt.Errorf("%d bytes, the limit is %d", len(d), MaxWorkingDir)
	}
	if !utf8.ValidString(d) || strings.IndexByte(d, 0) >= 0 {
		return errors.New("not UTF-8 without NUL bytes")
	}
	if !path.IsAbs(d) || path.Clean(d) != d {
		return fmt.Errorf("%q is not an absolute, clean path (want e.g. %q)", truncate(d), path.Clean("/"+d))
	}
	return nil
}

// CheckUser checks a user that replaces the image's, as docker's --user
// takes it: USER or USER:GROUP, each a number (uid, gid) or a name looked
// up in the image's /etc/passwd and /etc/group inside the guest. Names are
// 1..32 characters of [A-Za-z0-9._-] not starting with '-'; numbers are at
// most 4294967294.
func CheckUser(u string) error {
	if len(u) > MaxUser {
		return fmt.Errorf("%d bytes, the limit is %d", len(u), MaxUser)
	}
	user, group, hasGroup := strings.Cut(u, ":")
	if err := checkUserPart(user); err != nil {
		return fmt.Errorf("user %q: %w", truncate(u), err)
	}
	if hasGroup {
		if err := checkUserPart(group); err != nil {
			return fmt.Errorf("group in %q: %w", truncate(u), err)
		}
	}
	return nil
}

func checkUserPart(s string) error {
	if s == "" {
		return errors.New("empty; want a name or a number")
	}
	if s[0] >= '0' && s[0] <= '9' {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil || n == 1<<32-1 {
			return fmt.Errorf("%q is not a number 0..4294967294", truncate(s))
		}
		return nil
	}
	if len(s) > 32 || s[0] == '-' {
		return errors.New("a name is 1..32 characters from [A-Za-z0-9._-], not starting with '-'")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%q: a name is 1..32 characters from [A-Za-z0-9._-]", truncate(s))
		}
	}
	return nil
}

// DefaultPortHostIP is the host address a port forward listens on when
// none is given: all interfaces, as docker's -p does.
const DefaultPortHostIP = "0.0.0.0"

// Port is one TCP port forward from the host into the guest.
type Port struct {
	HostIP    netip.Addr // IPv4
	HostPort  uint16     // 0 (any free port, chosen when QEMU listens) or 1..65535
	GuestPort uint16     // 1..65535
}

// String is the port's canonical form, as recorded in LaunchEvent.Ports:
// "HOSTIP:HOSTPORT:GUESTPORT/tcp".
func (p Port) String() string {
	return fmt.Sprintf("%s:%d:%d/tcp", p.HostIP, p.HostPort, p.GuestPort)
}

// ParsePort parses a port forward as docker's -p takes it:
// [[HOSTIP:]HOSTPORT:]GUESTPORT[/tcp], HOSTIP an IPv4 address (default
// DefaultPortHostIP), HOSTPORT 0 or left out for any free port. Only TCP
// is forwarded.
func ParsePort(s string) (Port, error) {
	var p Port
	spec, proto, hasProto := strings.Cut(s, "/")
	if hasProto && proto != "tcp" {
		return p, fmt.Errorf("%q: protocol %q; only tcp is forwarded", truncate(s), truncate(proto))
	}
	parts := strings.Split(spec, ":")
	host := DefaultPortHostIP
	switch len(parts) {
	case 1:
		parts = []string{"0", parts[0]}
	case 2:
	case 3:
		host, parts = parts[0], parts[1:]
	default:
		return p, fmt.Errorf("%q: want [[HOSTIP:]HOSTPORT:]GUESTPORT[/tcp]", truncate(s))
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Is4() {
		return p, fmt.Errorf("%q: host address %q is not an IPv4 address", truncate(s), truncate(host))
	}
	p.HostIP = ip
	for i, dst := range []*uint16{&p.HostPort, &p.GuestPort} {
		n, err := strconv.ParseUint(parts[i], 10, 16)
		if err != nil || strconv.FormatUint(n, 10) != parts[i] {
			return p, fmt.Errorf("%q: port %q is not a number 0..65535", truncate(s), truncate(parts[i]))
		}
		if n == 0 && i == 1 {
			return p, fmt.Errorf("%q: guest port 0; want 1..65535", truncate(s))
		}
		*dst = uint16(n)
	}
	return p, nil
}

// checkWorkload checks the version 3 fields of e.
func (e *LaunchEvent) checkWorkload() error {
	if len(e.EnvKeys) > MaxEnv {
		return fmt.Errorf("launch event: %d env_keys, the limit is %d", len(e.EnvKeys), MaxEnv)
	}
	for i, k := range e.EnvKeys {
		if err := CheckEnvKey(k); err != nil {
			return fmt.Errorf("launch event: env_keys[%d]: %w", i, err)
		}
		if i > 0 && e.EnvKeys[i-1] >= k {
			return errors.New("launch event: env_keys are not sorted, each once")
		}
	}
	if (len(e.EnvKeys) == 0) != (e.EnvDigest == "") {
		return errors.New("launch event: env_keys and env_digest must both be set or both be empty")
	}
	if e.EnvDigest != "" {
		if _, _, err := ParseDigest(e.EnvDigest); err != nil {
			return fmt.Errorf("launch event: env_digest: %w", err)
		}
	}
	if e.WorkingDir != "" {
		if err := CheckWorkingDir(e.WorkingDir); err != nil {
			return fmt.Errorf("launch event: working_dir: %w", err)
		}
	}
	if e.User != "" {
		if err := CheckUser(e.User); err != nil {
			return fmt.Errorf("launch event: user: %w", err)
		}
	}
	switch e.Network {
	case "", NetworkUser, NetworkTap:
	default:
		return fmt.Errorf("launch event: network %q: want \"\" (none), %q or %q", truncate(e.Network), NetworkUser, NetworkTap)
	}
	if len(e.Ports) > 0 && e.Network != NetworkUser {
		return errors.New("launch event: ports without user-mode networking")
	}
	if len(e.Ports) > MaxPorts {
		return fmt.Errorf("launch event: %d ports, the limit is %d", len(e.Ports), MaxPorts)
	}
	for i, s := range e.Ports {
		p, err := ParsePort(s)
		if err != nil {
			return fmt.Errorf("launch event: ports[%d]: %w", i, err)
		}
		if p.String() != s {
			return fmt.Errorf("launch event: ports[%d] %q is not in canonical form %q", i, truncate(s), p.String())
		}
	}
	return e.CheckVolumes()
}

// CheckVolumes checks LaunchEvent.Volumes: canonical, at most MaxVolumes
// read-only volumes and tmpfs mounts each and MaxScratch scratch disks,
// each target once.
func (e *LaunchEvent) CheckVolumes() error {
	if len(e.Volumes) > MaxAllVolumes {
		return fmt.Errorf("launch event: %d volumes, the limit is %d", len(e.Volumes), MaxAllVolumes)
	}
	count := map[string]int{}
	targets := map[string]bool{}
	for i, s := range e.Volumes {
		v, err := ParseVolume(s)
		if err != nil {
			return fmt.Errorf("launch event: volumes[%d]: %w", i, err)
		}
		if v.String() != s {
			return fmt.Errorf("launch event: volumes[%d] %q is not in canonical form %q", i, truncate(s), v.String())
		}
		limit := MaxVolumes
		if v.Kind == VolumeScratch {
			limit = MaxScratch
		}
		if count[v.Kind]++; count[v.Kind] > limit {
			return fmt.Errorf("launch event: more than %d %s volumes", limit, v.Kind)
		}
		if targets[v.Target] {
			return fmt.Errorf("launch event: volumes[%d]: %s mounted twice", i, truncate(v.Target))
		}
		targets[v.Target] = true
	}
	return nil
}

// v3 reports whether e needs the version 3 encoding.
func (e *LaunchEvent) v3() bool {
	return len(e.EnvKeys) > 0 || e.EnvDigest != "" || e.WorkingDir != "" || e.User != "" || e.Network != "" || len(e.Ports) > 0 || len(e.Volumes) > 0
}

// Volume kinds of LaunchEvent.Volumes.
const (
	VolumeReadOnly = "ro"      // a read-only erofs disk built from a host directory, by digest
	VolumeTmpfs    = "tmpfs"   // writable scratch in guest memory
	VolumeScratch  = "scratch" // a writable scratch disk (ext4 on a sparse host file), empty at start, deleted with the sandbox
)

// Limits on volumes.
const (
	MaxVolumes    = 8       // read-only volumes, and tmpfs mounts, each
	MaxTmpfsBytes = 1 << 40 // the largest --tmpfs size= accepted (the guest's memory bounds it anyway)
	// MaxScratch bounds the scratch disks of a launch; MinScratchBytes and
	// MaxScratchBytes a scratch disk's size (a whole number of MiB).
	MaxScratch      = 4
	MinScratchBytes = 16 << 20
	MaxScratchBytes = 1 << 40
	// MaxAllVolumes bounds LaunchEvent.Volumes.
	MaxAllVolumes = 2*MaxVolumes + MaxScratch
)

// Volume is one mount a launch adds to the workload's root.
type Volume struct {
	Kind   string // VolumeReadOnly, VolumeTmpfs or VolumeScratch
	Target string // where, in the workload's root (CheckVolumeTarget; CheckScratchTarget for scratch)
	Digest string // VolumeReadOnly: the disk's digest
	// Size in bytes: VolumeTmpfs: 0 for the kernel's default (half the
	// guest's memory); VolumeScratch: the disk's, MinScratchBytes to
	// MaxScratchBytes, a multiple of 1 MiB.
	Size int64
}

// String is the volume's canonical form, as recorded in
// LaunchEvent.Volumes: "ro:TARGET:DIGEST", "tmpfs:TARGET:BYTES" or
// "scratch:TARGET:BYTES" (a scratch disk is writable; what is recorded is
// where and how large, never what it holds).
func (v Volume) String() string {
	if v.Kind == VolumeTmpfs || v.Kind == VolumeScratch {
		return fmt.Sprintf("%s:%s:%d", v.Kind, v.Target, v.Size)
	}
	return v.Kind + ":" + v.Target + ":" + v.Digest
}

// ParseSize parses a size: a number of bytes, or of KiB, MiB, GiB or TiB
// with a k, m, g or t suffix (either case), at most 1 << 50 bytes.
func ParseSize(s string) (int64, error) {
	mult := int64(1)
	num := s
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			num = s[:n-1]
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != num || n > (1<<50)/mult {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional k, m, g or t suffix", truncate(s))
	}
	return n * mult, nil
}

// CheckScratchSize checks a scratch disk's size: MinScratchBytes to
// MaxScratchBytes, a whole number of MiB.
func CheckScratchSize(n int64) error {
	if n < MinScratchBytes || n > MaxScratchBytes || n%(1<<20) != 0 {
		return fmt.Errorf("size %d: a scratch disk is 16m to 1024g, a whole number of MiB", n)
	}
	return nil
}

// scratchRefused are the directories a scratch disk may not be mounted
// over: it would hide the image's programs, libraries or configuration,
// or the sandbox's /run (which holds /run/secrets).
var scratchRefused = []string{"/bin", "/boot", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/run", "/sbin", "/usr"}

// CheckScratchTarget checks where a scratch disk is mounted:
// CheckVolumeTarget, and not over a system directory (/bin, /boot, /etc,
// /lib*, /run, /sbin, /usr themselves; a directory under them is fine,
// except under /run/secrets).
func CheckScratchTarget(p string) error {
	if err := CheckVolumeTarget(p); err != nil {
		return err
	}
	if slices.Contains(scratchRefused, p) {
		return fmt.Errorf("%q is a system directory of the image or the sandbox; mount the scratch disk elsewhere (e.g. /scratch)", p)
	}
	return nil
}

// ParseVolume parses a volume's canonical form (Volume.String).
func ParseVolume(s string) (Volume, error) {
	kind, rest, _ := strings.Cut(s, ":")
	target, arg, ok := strings.Cut(rest, ":")
	if !ok {
		return Volume{}, fmt.Errorf("volume %q: want ro:TARGET:DIGEST, tmpfs:TARGET:BYTES or scratch:TARGET:BYTES", truncate(s))
	}
	if err := CheckVolumeTarget(target); err != nil {
		return Volume{}, fmt.Errorf("volume %q: %w", truncate(s), err)
	}
	v := Volume{Kind: kind, Target: target}
	switch kind {
	case VolumeReadOnly:
		if _, _, err := ParseDigest(arg); err != nil {
			return Volume{}, fmt.Errorf("volume %q: %w", truncate(s), err)
		}
		v.Digest = arg
	case VolumeTmpfs:
		n, err := strconv.ParseInt(arg, 10, 64)
		if err != nil || n < 0 || n > MaxTmpfsBytes || strconv.FormatInt(n, 10) != arg {
			return Volume{}, fmt.Errorf("volume %q: size %q is not a number of bytes 0..%d", truncate(s), truncate(arg), int64(MaxTmpfsBytes))
		}
		v.Size = n
	case VolumeScratch:
		if err := CheckScratchTarget(target); err != nil {
			return Volume{}, fmt.Errorf("volume %q: %w", truncate(s), err)
		}
		n, err := strconv.ParseInt(arg, 10, 64)
		if err != nil || strconv.FormatInt(n, 10) != arg {
			return Volume{}, fmt.Errorf("volume %q: size %q is not a number of bytes", truncate(s), truncate(arg))
		}
		if err := CheckScratchSize(n); err != nil {
			return Volume{}, fmt.Errorf("volume %q: %w", truncate(s), err)
		}
		v.Size = n
	default:
		return Volume{}, fmt.Errorf("volume %q: kind %q: want %s, %s or %s", truncate(s), truncate(kind), VolumeReadOnly, VolumeTmpfs, VolumeScratch)
	}
	return v, nil
}

// CheckVolumeTarget checks where a volume is mounted in the workload's
// root: an absolute, clean path, not "/", without ':' or ',', at most
// MaxWorkingDir bytes, and not in the guest's pseudo filesystems (/proc,
// /sys, /dev) nor over its secrets (/run/secrets).
func CheckVolumeTarget(p string) error {
	if err := CheckWorkingDir(p); err != nil {
		return err
	}
	if p == "/" {
		return errors.New("the root itself cannot be a volume")
	}
	if strings.ContainsAny(p, ":,") {
		return fmt.Errorf("%q: ':' and ',' are not allowed in a volume path", truncate(p))
	}
	for _, no := range []string{"/proc", "/sys", "/dev", "/run/secrets"} {
		if p == no || strings.HasPrefix(p, no+"/") {
			return fmt.Errorf("%q is in %s, which the sandbox provides", truncate(p), no)
		}
	}
	return nil
}
