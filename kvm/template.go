package kvm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// A VM template is a guest booted once to the point where its agent waits
// for its identity, then snapshotted: its RAM and its device state. Clones
// resume from it in milliseconds, their RAM mapped copy-on-write from one
// sealed copy of the template's, and only then get an identity of their
// own (entropy, clock, sandbox id) and make their key. docs/templates.md.

// Recipe is everything a template's guest was made from. One recipe makes
// one template, and a clone is started only with the recipe it resumes
// from: the same kernel, initramfs and command line bytes (so a policy
// judges a clone's kernel exactly as a cold boot's), CPUs, memory,
// accelerator, QEMU version and machine.
type Recipe struct {
	Kernel    string `json:"kernel"` // digest of the kernel bytes
	Initrd    string `json:"initrd"` // digest of the base initramfs
	Cmdline   string `json:"cmdline"`
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
	Accel     string `json:"accel"`   // "kvm" or "tcg": never used across
	QEMU      string `json:"qemu"`    // QEMU's version line
	Machine   string `json:"machine"` // digest of the machine's command line (devices, options)
	Protocol  int    `json:"protocol"`
	// PodSlots is the number of container image slots of a pod's
	// template (Config.Pod; its machine has their devices too), 0 for
	// any other: a pod is a clone only of a template made for pods, and
	// the recipes differ. Omitted when 0, so that the recipes (and
	// digests) of templates made before pods had templates stay theirs.
	PodSlots int `json:"pod_slots,omitempty"`
	// Net says the template's machine has a network device (Config.
	// TemplateNet; a clone's is a launch with a Network, user or tap):
	// a launch with a network is a clone only of a template with one,
	// and a launch without is never one of such a template. Omitted
	// when false, so that the recipes (and digests) of templates made
	// before templates had networks stay theirs.
	Net bool `json:"net,omitempty"`
}

// Digest is the recipe's identity: SHA-256 of its JSON encoding.
func (r Recipe) Digest() string {
	b, _ := json.Marshal(r)
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// differences says how r (the template's recipe) and o (this launch's)
// differ, one entry per difference, in words where the field has a
// meaning to tell (a pod's image slots, the network device) and else with
// both values. The machine digest is taken from QEMU's command line,
// which the CPUs, memory, accelerator, pod slots and network device
// shape: it is named only when none of those differs — then the launcher
// sets up another machine than the one that made the template (another
// launcher version), which no other field shows.
func (r Recipe) differences(o Recipe) []string {
	var d []string
	add := func(name string, a, b any) {
		if a != b {
			d = append(d, fmt.Sprintf("%s %v (template) vs %v (this launch)", name, a, b))
		}
	}
	add("kernel", r.Kernel, o.Kernel)
	add("initrd", r.Initrd, o.Initrd)
	if r.Cmdline != o.Cmdline {
		d = append(d, fmt.Sprintf("cmdline %q (template) vs %q (this launch)", r.Cmdline, o.Cmdline))
	}
	add("cpus", r.CPUs, o.CPUs)
	add("memory_mib", r.MemoryMiB, o.MemoryMiB)
	add("accel", r.Accel, o.Accel)
	add("qemu", r.QEMU, o.QEMU)
	if r.Protocol != o.Protocol {
		d = append(d, fmt.Sprintf("guest protocol %d (template) vs %d (this launch): the template's agent is another version's", r.Protocol, o.Protocol))
	}
	switch {
	case r.PodSlots == o.PodSlots:
	case r.PodSlots == 0:
		d = append(d, fmt.Sprintf("pod image slots: the template has none (made without --pod), this launch is a pod's (%d slots)", o.PodSlots))
	case o.PodSlots == 0:
		d = append(d, fmt.Sprintf("pod image slots: the template is a pod's (%d slots, made with --pod), this launch is not a pod", r.PodSlots))
	default:
		add("pod_slots", r.PodSlots, o.PodSlots)
	}
	switch {
	case r.Net == o.Net:
	case o.Net:
		d = append(d, "network device: the template has none (made without --net), this launch has a network")
	default:
		d = append(d, "network device: the template has one (made with --net), this launch has no network")
	}
	shaped := r.CPUs != o.CPUs || r.MemoryMiB != o.MemoryMiB || r.Accel != o.Accel || r.PodSlots != o.PodSlots || r.Net != o.Net
	if r.Machine != o.Machine && !shaped {
		d = append(d, fmt.Sprintf("machine: the QEMU devices and options this launcher sets up are not those the template was made with "+
			"(a launcher of another version made it; digests %s (template) vs %s (this launch))", r.Machine, o.Machine))
	}
	return d
}

// TemplateInfo describes a template on disk (template.json).
type TemplateInfo struct {
	Name         string    `json:"name"`
	Recipe       Recipe    `json:"recipe"`
	RecipeDigest string    `json:"recipe_digest"`
	RAM          Blob      `json:"ram"`
	State        Blob      `json:"state"`
	Created      time.Time `json:"created"`
}

// Fits returns nil when a launch of recipe r can be a clone of the
// template, else an error naming each recipe field that differs, with
// both values, and the command that makes a template for r.
func (t TemplateInfo) Fits(r Recipe) error {
	d := t.Recipe.differences(r)
	if len(d) == 0 {
		return nil
	}
	how := "launcher template create"
	if r.PodSlots > 0 {
		how += " --pod"
	}
	if r.Net {
		how += " --net"
	}
	return fmt.Errorf("template %q was made from another recipe: %s; make a template for this one (%s)",
		t.Name, strings.Join(d, "; "), how)
}

// Blob is one of a template's files: its digest (BlobDigest) and size.
type Blob struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Template file names in a template directory.
const (
	templateInfoFile  = "template.json"
	templateRAMFile   = "ram"
	templateStateFile = "state"
	// MaxTemplateState bounds a template's device state (≈ 60 KB seen).
	MaxTemplateState = 64 << 20
	maxTemplateInfo  = 64 << 10
)

// Template is a template loaded for cloning: its RAM and device state in
// sealed memfds (write, grow, shrink and seal sealed), whose digests were
// taken while they were filled: the bytes every clone resumes are the
// bytes hashed, and no clone can change a page another clone reads. One
// Template serves any number of clones at once; Close it when done.
type Template struct {
	Info  TemplateInfo
	Dir   string
	ram   *os.File
	state *os.File
}

// Close releases the memfds (running clones keep their own mappings).
func (t *Template) Close() error {
	if t == nil {
		return nil
	}
	var err error
	for _, f := range []*os.File{t.ram, t.state} {
		if f != nil {
			if e := f.Close(); err == nil {
				err = e
			}
		}
	}
	return err
}

// ErrTemplateModified is wrapped by LoadTemplate's error when a template
// file's bytes are not those recorded when it was created.
var ErrTemplateModified = errors.New("modified after the template was made (remove it and make it again: launcher template rm, launcher template create)")

// ReadTemplateInfo reads dir/template.json (strictly).
func ReadTemplateInfo(dir string) (TemplateInfo, error) {
	var info TemplateInfo
	f, err := os.Open(filepath.Join(dir, templateInfoFile))
	if err != nil {
		return info, fmt.Errorf("kvm: template %s: %w", dir, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTemplateInfo+1))
	if err != nil {
		return info, fmt.Errorf("kvm: template %s: %w", dir, err)
	}
	if len(b) > maxTemplateInfo {
		return info, fmt.Errorf("kvm: template %s: %s larger than %d bytes", dir, templateInfoFile, maxTemplateInfo)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&info); err != nil {
		return info, fmt.Errorf("kvm: template %s: %s: %w", dir, templateInfoFile, err)
	}
	if info.Recipe.Digest() != info.RecipeDigest {
		return info, fmt.Errorf("kvm: template %s: recipe %w: it does not match its digest", dir, ErrTemplateModified)
	}
	if info.RAM.Size != int64(info.Recipe.MemoryMiB)<<20 || info.State.Size <= 0 || info.State.Size > MaxTemplateState {
		return info, fmt.Errorf("kvm: template %s: RAM %d bytes for %d MiB, state %d bytes: not a template", dir, info.RAM.Size, info.Recipe.MemoryMiB, info.State.Size)
	}
	return info, nil
}

// LoadTemplate loads the template in dir for cloning: RAM and device state
// are copied into sealed memfds while being hashed, and refused
// (ErrTemplateModified) unless both digests are those recorded at creation.
func LoadTemplate(dir string) (*Template, error) {
	info, err := ReadTemplateInfo(dir)
	if err != nil {
		return nil, err
	}
	t := &Template{Info: info, Dir: dir}
	ok := false
	defer func() {
		if !ok {
			t.Close()
		}
	}()
	for _, b := range []struct {
		file string
		blob Blob
		dst  **os.File
	}{
		{templateRAMFile, info.RAM, &t.ram},
		{templateStateFile, info.State, &t.state},
	} {
		src, err := os.Open(filepath.Join(dir, b.file))
		if err != nil {
			return nil, fmt.Errorf("kvm: template %s: %w", dir, err)
		}
		st, err := src.Stat()
		if err == nil && st.Size() != b.blob.Size {
			err = fmt.Errorf("%s %w: %d bytes, %d were recorded", b.file, ErrTemplateModified, st.Size(), b.blob.Size)
		}
		var mf *os.File
		if err == nil {
			mf, err = newMemfd("bulwark-template-" + b.file)
		}
		if err == nil {
			*b.dst = mf
			var digest string
			if digest, err = copySparse(mf, src, b.blob.Size); err == nil && digest != b.blob.Digest {
				err = fmt.Errorf("%s %w: digest %s, %s was recorded", b.file, ErrTemplateModified, digest, b.blob.Digest)
			}
		}
		src.Close()
		if err == nil {
			err = seal(mf)
		}
		if err != nil {
			return nil, fmt.Errorf("kvm: template %s: %w", dir, err)
		}
	}
	ok = true
	return t, nil
}

// Recipe returns the recipe a sandbox started with cfg would have (the
// accelerator chosen and the command line defaulted as Start does): the
// key to its template (TemplateDir).
func (cfg Config) Recipe() (Recipe, error) {
	if err := cfg.setDefaults(); err != nil {
		return Recipe{}, err
	}
	choice, err := ChooseAccel(cfg.Accel)
	if err != nil {
		return Recipe{}, err
	}
	cmdline := cfg.Cmdline
	if cmdline == "" {
		if cmdline, err = DefaultCmdline(choice.Accel); err != nil {
			return Recipe{}, err
		}
	}
	qemu, err := qemuBinary(cfg.QEMU)
	if err != nil {
		return Recipe{}, err
	}
	return recipeFor(&cfg, choice.Accel, cmdline, qemu)
}

// TemplateDir is where the template of recipe r lives under root: one
// recipe, one template.
func TemplateDir(root string, r Recipe) string {
	return filepath.Join(root, strings.TrimPrefix(r.Digest(), "sha256:")[:16])
}

// recipeFor is the recipe of a sandbox started with cfg under accel.
func recipeFor(cfg *Config, accel, cmdline, qemu string) (Recipe, error) {
	if cfg.KernelDigest == "" || cfg.InitrdDigest == "" {
		return Recipe{}, errors.New("kvm: templates and clones need Config.KernelDigest and InitrdDigest (the measured digests)")
	}
	version, err := qemuVersion(qemu)
	if err != nil {
		return Recipe{}, err
	}
	// The machine: QEMU's command line without what differs between
	// sandboxes (name, descriptors, paths) and between template and clone.
	// A pod's machine has its image slots, on placeholders (""); a
	// network device is the template's, whatever backend a clone gives it.
	spec := qemuSpec{accel: accel, cpus: cfg.CPUs, memoryMiB: cfg.MemoryMiB, ram: "RAM"}
	net := cfg.Network != "" || cfg.TemplateNet
	if net {
		spec.network = netTemplate
	}
	if cfg.Pod {
		spec.podSlots = podSlotCount(spec)
	}
	args := qemuArgs(spec)
	sum := sha256.Sum256([]byte(strings.Join(args, "\x00")))
	return Recipe{
		Kernel: cfg.KernelDigest, Initrd: cfg.InitrdDigest, Cmdline: cmdline,
		CPUs: cfg.CPUs, MemoryMiB: cfg.MemoryMiB, Accel: accel,
		QEMU: version, Machine: "sha256:" + hex.EncodeToString(sum[:]), Protocol: channel.Version,
		PodSlots: spec.podSlots, Net: net,
	}, nil
}

var qemuVersions sync.Map // binary path -> version line

// qemuVersion is the first line of `qemu --version` (cached per binary).
func qemuVersion(qemu string) (string, error) {
	if v, ok := qemuVersions.Load(qemu); ok {
		return v.(string), nil
	}
	out, err := exec.Command(qemu, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("kvm: %s --version: %w", qemu, err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	line = strings.TrimSpace(line)
	if line == "" {
		return "", fmt.Errorf("kvm: %s --version printed nothing", qemu)
	}
	qemuVersions.Store(qemu, line)
	return line, nil
}

// CreateTemplate boots cfg's guest (no image: cfg.Image must be nil) until
// its agent reports READY — modules loaded, channel open, no key and no
// random state made — snapshots its RAM and device state, and writes the
// template into dir, which must not exist (it is created 0700; files
// appear only when complete). name labels it. With cfg.Pod the template
// is a pod's: its machine has the pod's image slots (on empty memfds),
// so that pods can be its clones (Recipe.PodSlots). With cfg.TemplateNet
// its machine has a network device, on a backend that reaches nothing
// (the guest's agent loads no network driver and configures no interface
// before its START), so that launches with a network can be its clones
// (Recipe.Net).
func CreateTemplate(ctx context.Context, cfg Config, dir, name string) (*TemplateInfo, error) {
	if cfg.Image != nil || cfg.Template != nil {
		return nil, errors.New("kvm: a template is made without an image and not from another template")
	}
	if _, err := os.Lstat(dir); err == nil {
		return nil, fmt.Errorf("kvm: template directory %s exists", dir)
	}
	ram, err := newMemfd("bulwark-template-ram")
	if err != nil {
		return nil, err
	}
	defer ram.Close()
	state, err := newMemfd("bulwark-template-state")
	if err != nil {
		return nil, err
	}
	defer state.Close()
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := ram.Truncate(int64(cfg.MemoryMiB) << 20); err != nil {
		return nil, fmt.Errorf("kvm: template RAM: %w", err)
	}
	s, err := start(ctx, cfg, &mode{templateRAM: ram})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	select {
	case <-s.ready:
	case <-s.exited:
		return nil, s.endError("the guest stopped before its agent was ready")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := s.snapshot(ctx, state); err != nil {
		return nil, err
	}
	s.Close()
	recipe := s.recipe

	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("kvm: template: %w", err)
	}
	defer os.RemoveAll(tmp)
	info := &TemplateInfo{Name: name, Recipe: recipe, RecipeDigest: recipe.Digest(), Created: cfg.now().UTC().Truncate(time.Second)}
	for _, b := range []struct {
		file string
		src  *os.File
		blob *Blob
	}{
		{templateRAMFile, ram, &info.RAM},
		{templateStateFile, state, &info.State},
	} {
		st, err := b.src.Stat()
		if err != nil {
			return nil, err
		}
		if b.file == templateStateFile && (st.Size() == 0 || st.Size() > MaxTemplateState) {
			return nil, fmt.Errorf("kvm: template device state is %d bytes (want 1..%d)", st.Size(), MaxTemplateState)
		}
		f, err := os.OpenFile(filepath.Join(tmp, b.file), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("kvm: template: %w", err)
		}
		digest, err := copySparse(f, b.src, st.Size())
		if err == nil {
			err = f.Truncate(st.Size()) // a trailing hole
		}
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("kvm: template %s: %w", b.file, err)
		}
		*b.blob = Blob{Digest: digest, Size: st.Size()}
	}
	j, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, templateInfoFile), append(j, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("kvm: template: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("kvm: template: %w", err)
	}
	return info, nil
}

// snapshot stops the guest and saves its device state into state over
// QMP (migration to a descriptor; the RAM, a shared file, is skipped:
// x-ignore-shared). The guest stays stopped.
func (s *Sandbox) snapshot(ctx context.Context, state *os.File) error {
	q := s.qmp
	steps := []struct {
		cmd  string
		args any
		file *os.File
	}{
		{"stop", nil, nil},
		{"migrate-set-capabilities", migrationCaps(false), nil},
		{"getfd", map[string]any{"fdname": "state"}, state},
		{"migrate", map[string]any{"uri": "fd:state"}, nil},
	}
	for _, st := range steps {
		if _, err := q.ExecuteWithFile(ctx, st.cmd, st.args, st.file); err != nil {
			return fmt.Errorf("kvm: template snapshot: %s: %w", st.cmd, err)
		}
	}
	return s.waitMigration(ctx, "template snapshot")
}

// waitMigration polls query-migrate until the migration completed.
func (s *Sandbox) waitMigration(ctx context.Context, what string) error {
	for {
		raw, err := s.qmp.Execute(ctx, "query-migrate", nil)
		if err != nil {
			return fmt.Errorf("kvm: %s: query-migrate: %w", what, err)
		}
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("kvm: %s: query-migrate: %w", what, err)
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("kvm: %s: migration %s: %s", what, st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.exited:
			return s.endError(what + ": QEMU exited")
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func migrationCaps(events bool) map[string]any {
	caps := []map[string]any{{"capability": "x-ignore-shared", "state": true}}
	if events {
		caps = append(caps, map[string]any{"capability": "events", "state": true})
	}
	return map[string]any{"capabilities": caps}
}

// BlobChunk is the chunk size of a template blob's digest.
const BlobChunk = 2 << 20

// zeroChunkDigest is the SHA-256 of BlobChunk zero bytes.
var zeroChunkDigest = sync.OnceValue(func() [32]byte { return sha256.Sum256(make([]byte, BlobChunk)) })

// copySparse copies size bytes of src to dst (at the same offsets,
// leaving holes where src has holes or all-zero pages) and returns the
// blob digest of the bytes: "sha256:" and the SHA-256 of the
// concatenated SHA-256 of each BlobChunk-byte chunk (the last may be
// shorter). Chunks in a hole of src are not read: their digest is known.
// dst nil only hashes.
func copySparse(dst, src *os.File, size int64) (string, error) {
	top := sha256.New()
	buf := make([]byte, BlobChunk)
	zero := make([]byte, 4096)
	fd := int(src.Fd())
	for off := int64(0); off < size; off += BlobChunk {
		n := min(int64(BlobChunk), size-off)
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil && !errors.Is(err, unix.ENXIO) {
			return "", fmt.Errorf("seeking data: %w", err)
		}
		if errors.Is(err, unix.ENXIO) || data >= off+n {
			z := zeroChunkDigest()
			if n < BlobChunk {
				z = sha256.Sum256(make([]byte, n))
			}
			top.Write(z[:])
			continue
		}
		chunk := buf[:n]
		if _, err := src.ReadAt(chunk, off); err != nil {
			return "", fmt.Errorf("reading at %d: %w", off, err)
		}
		sum := sha256.Sum256(chunk)
		top.Write(sum[:])
		if dst == nil {
			continue
		}
		for p := int64(0); p < n; p += 4096 {
			page := chunk[p:min(p+4096, n)]
			if bytes.Equal(page, zero[:len(page)]) {
				continue
			}
			if _, err := dst.WriteAt(page, off+p); err != nil {
				return "", fmt.Errorf("writing at %d: %w", off+p, err)
			}
		}
	}
	if dst != nil {
		if st, err := dst.Stat(); err == nil && st.Size() < size {
			if err := dst.Truncate(size); err != nil {
				return "", err
			}
		}
	}
	return "sha256:" + hex.EncodeToString(top.Sum(nil)), nil
}

func newMemfd(name string) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("kvm: memfd: %w", err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// seal forbids every change to f's bytes and size, and further seals.
func seal(f *os.File) error {
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL); err != nil {
		return fmt.Errorf("sealing %s: %w", f.Name(), err)
	}
	return nil
}

// ListTemplates reads the templates in root's subdirectories, sorted by
// name, with their directories; unreadable ones are returned as errors.
func ListTemplates(root string) ([]TemplateInfo, []string, []error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, nil
		}
		return nil, nil, []error{err}
	}
	type found struct {
		info TemplateInfo
		dir  string
	}
	var all []found
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		d := filepath.Join(root, e.Name())
		info, err := ReadTemplateInfo(d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		all = append(all, found{info, d})
	}
	slices.SortFunc(all, func(a, b found) int { return strings.Compare(a.info.Name, b.info.Name) })
	infos, dirs := make([]TemplateInfo, len(all)), make([]string, len(all))
	for i, f := range all {
		infos[i], dirs[i] = f.info, f.dir
	}
	return infos, dirs, errs
}
