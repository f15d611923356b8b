package kvm

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bulwark-project/bulwark/internal/fsutil"
	"github.com/bulwark-project/bulwark/kvm/channel"
	"github.com/bulwark-project/bulwark/kvm/cpio"
	"github.com/klauspost/compress/zstd"
)

// DefaultModules are the kernel modules the guest loads at boot: the
// virtio-mmio transport (microvm), virtio-serial for the channel,
// virtio-rng, so the kernel's random pool is ready at once for the agent's
// key generation (without it the first getrandom blocks for a second or
// more under TCG), and the image disk: virtio_blk, erofs (whose libcrc32c
// needs a crc32c implementation: the guest has no modprobe to find one)
// and overlayfs for the writable layer. Loaded before READY, they are part
// of a template (every disk slot has one size, DiskSlotSize, so the disk a
// template's guest probed is the size of each clone's); dependencies
// (virtio, virtio_ring, libcrc32c) are added from modules.dep.
func DefaultModules() []string {
	return []string{"virtio_mmio", "virtio_rng", "virtio_console", "virtio_blk", "crc32c_generic", "erofs", "overlay"}
}

// DefaultDiskModules are loaded when the agent mounts the image disk, after
// a clone resumed: none by default (loading virtio_blk there cost a clone
// 100-300 ms of its start under TCG).
func DefaultDiskModules() []string { return nil }

// DefaultNetModules are loaded by the agent only for a workload with a
// network (launcher run --net user): virtio_net (and its dependencies not
// in Modules). A guest without a network never probes a network device.
func DefaultNetModules() []string { return []string{"virtio_net"} }

// DefaultScratchModules are loaded by the agent only for a workload with a
// scratch disk (launcher run --scratch): ext4 (and jbd2, mbcache, crc16;
// its crc32c is among DefaultModules already). A guest without one never
// loads them.
func DefaultScratchModules() []string { return []string{"ext4"} }

// BaseOptions configures BuildBaseInitramfs.
type BaseOptions struct {
	// Agent is the static guest agent binary (bin/bulwark-agent); required.
	Agent []byte
	// KernelVersion names the module directory, e.g. "6.1.0-56-amd64"; it
	// must be the version of the guest kernel. Required.
	KernelVersion string
	// ModulesDir is the root of module trees; default /lib/modules.
	ModulesDir string
	// Modules to include (by name, '-' and '_' equivalent); default
	// DefaultModules. Dependencies are added.
	Modules []string
	// DiskModules are loaded when the image disk is mounted; default
	// DefaultDiskModules. Dependencies not in Modules are added.
	DiskModules []string
	// NetModules are loaded when the workload has a network; default
	// DefaultNetModules, left out when the kernel has none of them (such
	// a base initramfs refuses --net user). Dependencies not in Modules
	// are added.
	NetModules []string
	// ScratchModules are loaded when the workload has a scratch disk;
	// default DefaultScratchModules, left out when the kernel has none
	// of them (such a base initramfs refuses --scratch). Dependencies not
	// in Modules are added.
	ScratchModules []string
}

// BuildBaseInitramfs builds the base initramfs: /init (the agent), the
// kernel modules (decompressed) with their dependencies, and the manifest
// /.bulwark/base.json listing them in load order. The archive is
// deterministic: entries sorted by path, owner 0:0, mtime 0, so the same
// inputs give the same bytes and the same digest. It is a measured artifact.
func BuildBaseInitramfs(opts BaseOptions) ([]byte, error) {
	if len(opts.Agent) == 0 {
		return nil, errors.New("kvm: base initramfs: the agent binary is empty (0 bytes); build it with: CGO_ENABLED=0 go build -o bin/bulwark-agent ./cmd/bulwark-agent")
	}
	if err := checkStatic(opts.Agent); err != nil {
		return nil, err
	}
	if opts.KernelVersion == "" || strings.ContainsAny(opts.KernelVersion, "/\x00") || opts.KernelVersion == ".." {
		return nil, fmt.Errorf("kvm: base initramfs: bad kernel version %q", opts.KernelVersion)
	}
	if opts.ModulesDir == "" {
		opts.ModulesDir = "/lib/modules"
	}
	if len(opts.Modules) == 0 {
		opts.Modules = DefaultModules()
	}
	if opts.DiskModules == nil {
		opts.DiskModules = DefaultDiskModules()
	}
	netOptional := opts.NetModules == nil // a kernel without virtio_net still boots workloads without a network
	if netOptional {
		opts.NetModules = DefaultNetModules()
	}
	scratchOptional := opts.ScratchModules == nil
	if scratchOptional {
		opts.ScratchModules = DefaultScratchModules()
	}
	modRoot := filepath.Join(opts.ModulesDir, opts.KernelVersion)
	order, err := resolveModules(modRoot, opts.Modules, false)
	if err != nil {
		return nil, err
	}
	diskOrder, err := resolveModules(modRoot, opts.DiskModules, false)
	if err != nil {
		return nil, err
	}
	netOrder, err := resolveModules(modRoot, opts.NetModules, netOptional)
	if err != nil {
		return nil, err
	}
	scratchOrder, err := resolveModules(modRoot, opts.ScratchModules, scratchOptional)
	if err != nil {
		return nil, err
	}
	var ents []entry
	dir := func(name string, perm uint32) {
		ents = append(ents, entry{h: cpio.Header{Name: name, Mode: cpio.TypeDir | perm}})
	}
	for _, d := range []string{".bulwark", ".bulwark/modules", "dev", "proc", "sys", "run", "tmp", "rootfs"} {
		dir(d, 0o755)
	}
	ents = append(ents, entry{h: cpio.Header{Name: "dev/console", Mode: cpio.TypeChar | 0o600, RDevMajor: 5, RDevMinor: 1}})
	ents = append(ents, entry{h: cpio.Header{Name: "init", Mode: cpio.TypeReg | 0o755}, data: opts.Agent})
	man := channel.BaseManifest{KernelVersion: opts.KernelVersion}
	included := map[string]bool{}
	all := append(append(append(append([]string{}, order...), diskOrder...), netOrder...), scratchOrder...)
	for i, rel := range all {
		name := moduleName(rel) + ".ko"
		if included[name] {
			continue // a dependency of both lists is loaded with the first
		}
		included[name] = true
		data, err := readModule(filepath.Join(modRoot, rel))
		if err != nil {
			return nil, err
		}
		switch {
		case i < len(order):
			man.Modules = append(man.Modules, name)
		case i < len(order)+len(diskOrder):
			man.DiskModules = append(man.DiskModules, name)
		case i < len(order)+len(diskOrder)+len(netOrder):
			man.NetModules = append(man.NetModules, name)
		default:
			man.ScratchModules = append(man.ScratchModules, name)
		}
		ents = append(ents, entry{h: cpio.Header{Name: ".bulwark/modules/" + name, Mode: cpio.TypeReg | 0o644}, data: data})
	}
	mj, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return nil, err
	}
	ents = append(ents, entry{h: cpio.Header{Name: strings.TrimPrefix(channel.BaseManifestPath, "/"), Mode: cpio.TypeReg | 0o644}, data: append(mj, '\n')})
	return writeEntries(ents)
}

// checkStatic makes sure the agent is a statically linked ELF executable:
// the initramfs has no dynamic loader or libc.
func checkStatic(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("kvm: base initramfs: the agent is not an ELF executable: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("kvm: base initramfs: the agent is dynamically linked; build it with CGO_ENABLED=0 go build -o bin/bulwark-agent ./cmd/bulwark-agent")
		}
	}
	return nil
}

type entry struct {
	h    cpio.Header
	data []byte
}

func writeEntries(ents []entry) ([]byte, error) {
	sort.SliceStable(ents, func(i, j int) bool { return ents[i].h.Name < ents[j].h.Name })
	var buf bytes.Buffer
	w := cpio.NewWriter(&buf)
	ino := uint32(1)
	for i := range ents {
		e := &ents[i]
		if e.h.Ino == 0 {
			e.h.Ino = ino
			ino++
		}
		if err := w.WriteFile(e.h, e.data); err != nil {
			return nil, fmt.Errorf("kvm: initramfs: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("kvm: initramfs: %w", err)
	}
	return buf.Bytes(), nil
}

// moduleName turns "kernel/drivers/virtio/virtio_ring.ko.xz" into "virtio_ring".
func moduleName(p string) string {
	b := path.Base(p)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		b = strings.TrimSuffix(b, ext)
	}
	return strings.ReplaceAll(strings.TrimSuffix(b, ".ko"), "-", "_")
}

// resolveModules reads modules.dep and returns module paths (relative to
// modRoot) in load order: every module after its dependencies.
func resolveModules(modRoot string, want []string, optional bool) ([]string, error) {
	f, err := os.Open(filepath.Join(modRoot, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("kvm: kernel modules: %w (is the kernel version right? apt-get install linux-image-amd64)", err)
	}
	defer f.Close()
	deps := map[string][]string{} // path -> dep paths
	byName := map[string]string{} // name -> path
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		byName[moduleName(mod)] = mod
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kvm: reading modules.dep: %w", err)
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(modRoot, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[moduleName(l)] = true
		}
	}
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(p string, chain []string) error
	visit = func(p string, chain []string) error {
		switch state[p] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("kvm: module dependency cycle: %s", strings.Join(append(chain, p), " -> "))
		}
		state[p] = 1
		for _, d := range deps[p] {
			if err := visit(d, append(chain, p)); err != nil {
				return err
			}
		}
		state[p] = 2
		order = append(order, p)
		return nil
	}
	for _, name := range want {
		n := strings.ReplaceAll(name, "-", "_")
		p, ok := byName[n]
		if !ok {
			if builtin[n] || optional {
				continue // built into the kernel (or not needed): nothing to load
			}
			return nil, fmt.Errorf("kvm: kernel module %q not found in %s/modules.dep", name, modRoot)
		}
		if err := visit(p, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

const maxModuleSize = 64 << 20

// readModule reads a module, decompressing .ko.xz, .ko.zst and .ko.gz.
func readModule(p string) ([]byte, error) {
	raw, err := fsutil.ReadFileLimit(p, maxModuleSize)
	if err != nil {
		return nil, fmt.Errorf("kvm: kernel module: %w", err)
	}
	var out []byte
	switch {
	case strings.HasSuffix(p, ".xz"):
		out, err = decompressXZ(raw, maxModuleSize)
	case strings.HasSuffix(p, ".zst"):
		var d *zstd.Decoder
		d, err = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(maxModuleSize), zstd.WithDecoderConcurrency(1))
		if err == nil {
			out, err = d.DecodeAll(raw, nil)
			d.Close()
		}
	case strings.HasSuffix(p, ".gz"):
		var g *gzip.Reader
		g, err = gzip.NewReader(bytes.NewReader(raw))
		if err == nil {
			out, err = io.ReadAll(io.LimitReader(g, maxModuleSize))
		}
	default:
		out = raw
	}
	if err != nil {
		return nil, fmt.Errorf("kvm: kernel module %s: %w", p, err)
	}
	if !bytes.HasPrefix(out, []byte("\x7fELF")) {
		return nil, fmt.Errorf("kvm: kernel module %s is not an ELF object", p)
	}
	return out, nil
}

// Defaults for ImageOptions: what an image's root filesystem may cost the
// launcher (it holds the files while it builds the disk) and the host's
// staging directory. measure.OpenImage bounds the
// unpacked layers the same way before anything is built.
const (
	DefaultMaxImageSize  = 1 << 30 // bytes of file content
	DefaultMaxImageFiles = 1 << 18 // entries of every kind
	MaxImagePath         = 4096    // bytes in an entry's path (PATH_MAX)
	MaxImageName         = 255     // bytes in one path component (NAME_MAX)
)

// ImageOptions configures BuildImageDisk.
type ImageOptions struct {
	// MaxSize bounds the total size of the image's files; default
	// DefaultMaxImageSize.
	MaxSize int64
	// MaxFiles bounds the number of entries; default DefaultMaxImageFiles.
	MaxFiles int
	// Logger receives notes about entries that are skipped (device nodes).
	Logger *slog.Logger
}

// withDefaults fills in the zero fields.
func (o ImageOptions) withDefaults() ImageOptions {
	if o.MaxSize <= 0 {
		o.MaxSize = DefaultMaxImageSize
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = DefaultMaxImageFiles
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// cleanImagePath maps a tar name to a path relative to the image root, or
// "" for the root itself; names escaping the root are an error.
func cleanImagePath(name string) (string, error) {
	if len(name) > MaxImagePath {
		return "", fmt.Errorf("kvm: image entry %.64q...: path longer than %d bytes", name, MaxImagePath)
	}
	p := path.Clean("/" + name)
	if strings.Contains(name, "\x00") {
		return "", fmt.Errorf("kvm: image entry %q: NUL in name", name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("kvm: image entry %q escapes the root", name)
		}
		if len(c) > MaxImageName {
			return "", fmt.Errorf("kvm: image entry %.64q...: a name longer than %d bytes", name, MaxImageName)
		}
	}
	return strings.TrimPrefix(p, "/"), nil
}

func tarEntries(r io.Reader, opts ImageOptions) ([]entry, error) {
	opts = opts.withDefaults()
	tr := tar.NewReader(r)
	var ents []entry
	byPath := map[string]int{}
	type link struct{ name, target string }
	var links []link
	var total int64
	for n := 0; ; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("kvm: reading image layers: %w", err)
		}
		if n >= opts.MaxFiles {
			return nil, fmt.Errorf("kvm: the image has more than %d files (ImageOptions.MaxFiles)", opts.MaxFiles)
		}
		name, err := cleanImagePath(h.Name)
		if err != nil {
			return nil, err
		}
		if name == "" {
			continue
		}
		hdr := cpio.Header{
			Name:  "rootfs/" + name,
			Mode:  uint32(h.Mode) & 0o7777,
			UID:   uint32(h.Uid),
			GID:   uint32(h.Gid),
			MTime: min(max(h.ModTime.Unix(), 0), 0xffffffff),
		}
		var data []byte
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			total += h.Size
			if h.Size < 0 || total > opts.MaxSize {
				return nil, fmt.Errorf("kvm: image files exceed %d bytes (ImageOptions.MaxSize)", opts.MaxSize)
			}
			data = make([]byte, h.Size)
			if _, err := io.ReadFull(tr, data); err != nil {
				return nil, fmt.Errorf("kvm: reading image file %s: %w", name, err)
			}
			hdr.Mode |= cpio.TypeReg
		case tar.TypeDir:
			hdr.Mode |= cpio.TypeDir
		case tar.TypeSymlink:
			hdr.Mode |= cpio.TypeSymlink
			data = []byte(h.Linkname)
			if len(data) == 0 || len(data) > 4096 {
				return nil, fmt.Errorf("kvm: image symlink %s: bad target length %d", name, len(data))
			}
		case tar.TypeFifo:
			hdr.Mode |= cpio.TypeFIFO
		case tar.TypeLink:
			target, err := cleanImagePath(h.Linkname)
			if err != nil || target == "" {
				return nil, fmt.Errorf("kvm: image hard link %s -> %q: bad target", name, h.Linkname)
			}
			links = append(links, link{name: name, target: target})
			continue
		case tar.TypeChar, tar.TypeBlock:
			opts.Logger.Debug("skipping device node from image (the guest mounts devtmpfs on /dev)", "path", "/"+name)
			continue
		default:
			opts.Logger.Debug("skipping unsupported image entry", "path", "/"+name, "type", string(h.Typeflag))
			continue
		}
		if i, dup := byPath[name]; dup {
			ents[i] = entry{h: hdr, data: data} // a later entry for the same path wins
			continue
		}
		byPath[name] = len(ents)
		ents = append(ents, entry{h: hdr, data: data})
	}
	// Hard links: every member of a group shares an inode number; the
	// member that sorts first carries the data (the kernel links later ones
	// to it), the others are empty.
	groups := map[string][]string{} // target -> link names
	for _, l := range links {
		ti, ok := byPath[l.target]
		if !ok || ents[ti].h.Mode&cpio.TypeMask != cpio.TypeReg {
			return nil, fmt.Errorf("kvm: image hard link /%s -> /%s: target is not a regular file in the image", l.name, l.target)
		}
		groups[l.target] = append(groups[l.target], l.name)
	}
	targets := make([]string, 0, len(groups))
	for t := range groups {
		targets = append(targets, t)
	}
	sort.Strings(targets)
	ino := uint32(1 << 30)
	for _, t := range targets {
		ti := byPath[t]
		members := append([]string{t}, groups[t]...)
		sort.Strings(members)
		data := ents[ti].data
		for _, m := range members {
			h := ents[ti].h
			h.Name = "rootfs/" + m
			h.Ino = ino
			h.NLink = uint32(len(members))
			e := entry{h: h}
			if m == members[0] {
				e.data = data
			}
			if m == t {
				ents[ti] = e
			} else {
				byPath[m] = len(ents)
				ents = append(ents, e)
			}
		}
		ino++
	}
	// No entry may lie under a symlink or a non-directory of the image:
	// staging follows symlinks in paths, so "x -> /" plus "x/etc/passwd"
	// would write outside the staging directory (over the host's).
	for _, e := range ents {
		rel := strings.TrimPrefix(e.h.Name, "rootfs/")
		for d := path.Dir(rel); d != "." && d != "/"; d = path.Dir(d) {
			i, ok := byPath[d]
			if !ok {
				continue
			}
			if ents[i].h.Mode&cpio.TypeMask != cpio.TypeDir {
				return nil, fmt.Errorf("kvm: image entry /%s lies under /%s, which is not a directory in the image", rel, d)
			}
		}
	}
	// Parent directories that the layers did not list.
	for _, e := range ents {
		for d := path.Dir(strings.TrimPrefix(e.h.Name, "rootfs/")); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := byPath[d]; ok {
				break
			}
			byPath[d] = len(ents)
			ents = append(ents, entry{h: cpio.Header{Name: "rootfs/" + d, Mode: cpio.TypeDir | 0o755}})
		}
	}
	return ents, nil
}
