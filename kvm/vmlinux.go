package kvm

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bulwark-project/bulwark/internal/fsutil"
	"github.com/klauspost/compress/zstd"
)

// MaxVmlinuxSize bounds the decompressed kernel (a decompression bomb guard).
const MaxVmlinuxSize = 1 << 30

// maxBzImageSize bounds the compressed kernel read by ExtractVmlinux.
const maxBzImageSize = 256 << 20

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY, the note QEMU looks for
// to boot an ELF kernel through its PVH entry point.
const xenElfnotePhys32Entry = 18

// ErrNoPVHNote is returned for an ELF kernel without the PVH entry note.
var ErrNoPVHNote = errors.New("kvm: kernel ELF has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); build it with CONFIG_PVH=y")

// ExtractVmlinux decompresses the ELF vmlinux out of an x86 bzImage.
//
// It reads the setup header (payload_offset/payload_length, boot protocol
// 2.08+) and falls back to scanning for a compressed stream; XZ, zstd and
// gzip payloads are supported. The result is checked to be an x86-64 ELF
// with a PVH entry note (see CheckPVH). bzImage is untrusted input: sizes
// are bounded and malformed data gives an error, never a panic.
func ExtractVmlinux(bzImage []byte) ([]byte, error) {
	return extractVmlinux(bzImage, MaxVmlinuxSize)
}

func extractVmlinux(bzImage []byte, limit int64) ([]byte, error) {
	if len(bzImage) > maxBzImageSize {
		return nil, fmt.Errorf("kvm: bzImage is %d bytes, limit %d", len(bzImage), maxBzImageSize)
	}
	if bytes.HasPrefix(bzImage, []byte(elf.ELFMAG)) {
		if err := CheckPVH(bzImage); err != nil {
			return nil, err
		}
		return bzImage, nil // already a vmlinux
	}
	var candidates [][]byte
	if p, ok := setupPayload(bzImage); ok {
		candidates = append(candidates, p)
	}
	for _, m := range compressionMagics {
		if i := bytes.Index(bzImage, m.magic); i >= 0 {
			candidates = append(candidates, bzImage[i:])
		}
	}
	if len(candidates) == 0 {
		return nil, errors.New("kvm: no XZ, zstd or gzip stream found in the kernel image (is it an x86 bzImage?)")
	}
	var errs []error
	for _, c := range candidates {
		out, err := decompress(c, limit)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := CheckPVH(out); err != nil {
			errs = append(errs, err)
			continue
		}
		return out, nil
	}
	return nil, fmt.Errorf("kvm: extracting vmlinux: %w", errors.Join(errs...))
}

var compressionMagics = []struct {
	name  string
	magic []byte
}{
	{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
	{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{"gzip", []byte{0x1f, 0x8b, 0x08}},
}

// setupPayload returns the compressed payload named by the bzImage setup
// header, if the header is present and consistent.
func setupPayload(b []byte) ([]byte, bool) {
	if len(b) < 0x250 || string(b[0x202:0x206]) != "HdrS" {
		return nil, false
	}
	if binary.LittleEndian.Uint16(b[0x206:]) < 0x208 {
		return nil, false
	}
	setupSects := int(b[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	start := (setupSects + 1) * 512
	off := int64(binary.LittleEndian.Uint32(b[0x248:]))
	n := int64(binary.LittleEndian.Uint32(b[0x24c:]))
	lo := int64(start) + off
	if lo < 0 || n <= 0 || lo+n > int64(len(b)) {
		return nil, false
	}
	return b[lo : lo+n], true
}

func decompress(c []byte, limit int64) ([]byte, error) {
	var r io.Reader
	switch {
	case bytes.HasPrefix(c, compressionMagics[0].magic):
		return decompressXZ(c, limit)
	case bytes.HasPrefix(c, compressionMagics[1].magic):
		zr, err := zstd.NewReader(bytes.NewReader(c), zstd.WithDecoderMaxMemory(uint64(limit)), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		r = zr
	case bytes.HasPrefix(c, compressionMagics[2].magic):
		gr, err := gzip.NewReader(bytes.NewReader(c))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		gr.Multistream(false)
		r = gr
	default:
		return nil, errors.New("unknown compression")
	}
	var out bytes.Buffer
	n, err := io.Copy(&out, io.LimitReader(r, limit+1))
	if n > limit {
		return nil, fmt.Errorf("decompressed kernel exceeds %d bytes", limit)
	}
	// The kernel appends its uncompressed size after the stream: a reader
	// that complains about trailing bytes after a complete ELF is fine.
	if err != nil && !(out.Len() > 0 && bytes.HasPrefix(out.Bytes(), []byte(elf.ELFMAG)) && isTrailingErr(err)) {
		return nil, err
	}
	return out.Bytes(), nil
}

func isTrailingErr(err error) bool {
	s := err.Error()
	return errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(s, "trailing") || strings.Contains(s, "padding") || strings.Contains(s, "magic")
}

// CheckPVH verifies that b is an x86-64 ELF executable carrying the PVH
// entry note (XEN_ELFNOTE_PHYS32_ENTRY, type 18, owner "Xen").
func CheckPVH(b []byte) error {
	return checkPVH(bytes.NewReader(b))
}

func checkPVH(r io.ReaderAt) error {
	f, err := elf.NewFile(r)
	if err != nil {
		return fmt.Errorf("kvm: kernel is not an ELF file: %w", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("kvm: kernel ELF is %v/%v, want ELFCLASS64/EM_X86_64", f.Class, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		if p.Filesz > 1<<20 {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			continue
		}
		if hasNote(data, f.ByteOrder, "Xen", xenElfnotePhys32Entry) {
			return nil
		}
	}
	return ErrNoPVHNote
}

func hasNote(data []byte, bo binary.ByteOrder, owner string, typ uint32) bool {
	for len(data) >= 12 {
		namesz := bo.Uint32(data[0:])
		descsz := bo.Uint32(data[4:])
		t := bo.Uint32(data[8:])
		data = data[12:]
		nlen := align4(uint64(namesz))
		dlen := align4(uint64(descsz))
		if nlen > uint64(len(data)) || nlen+dlen > uint64(len(data)) {
			return false
		}
		name := string(bytes.TrimRight(data[:namesz], "\x00"))
		if name == owner && t == typ {
			return true
		}
		data = data[nlen+dlen:]
	}
	return false
}

func align4(n uint64) uint64 { return (n + 3) &^ 3 }

// HostKernel is a kernel found on the host: the bzImage and its version
// (the name of its directory under /lib/modules).
type HostKernel struct {
	Version string // e.g. "6.1.0-56-amd64"
	BzImage string // e.g. "/boot/vmlinuz-6.1.0-56-amd64"
}

// FindHostKernel picks the host's distribution kernel: the running kernel's
// /boot/vmlinuz if it exists, else the newest /boot/vmlinuz-VERSION that has
// a /lib/modules/VERSION directory (the guest needs its modules).
func FindHostKernel() (HostKernel, error) {
	return findHostKernel("/boot", "/lib/modules")
}

func findHostKernel(bootDir, modDir string) (HostKernel, error) {
	if rel, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		v := strings.TrimSpace(string(rel))
		p := filepath.Join(bootDir, "vmlinuz-"+v)
		if fileExists(p) && fileExists(filepath.Join(modDir, v, "modules.dep")) {
			return HostKernel{Version: v, BzImage: p}, nil
		}
	}
	matches, _ := filepath.Glob(filepath.Join(bootDir, "vmlinuz-*"))
	var found []HostKernel
	for _, m := range matches {
		v := strings.TrimPrefix(filepath.Base(m), "vmlinuz-")
		if fileExists(filepath.Join(modDir, v, "modules.dep")) {
			found = append(found, HostKernel{Version: v, BzImage: m})
		}
	}
	if len(found) == 0 {
		return HostKernel{}, fmt.Errorf("kvm: no kernel in %s with modules in %s: apt-get install linux-image-amd64, or give a kernel explicitly", bootDir, modDir)
	}
	sort.Slice(found, func(i, j int) bool { return versionLess(found[i].Version, found[j].Version) })
	return found[len(found)-1], nil
}

// versionLess compares kernel versions numerically field by field.
func versionLess(a, b string) bool {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '_' })
	}
	fa, fb := split(a), split(b)
	for i := 0; i < len(fa) && i < len(fb); i++ {
		na, ea := atoi(fa[i])
		nb, eb := atoi(fb[i])
		switch {
		case ea && eb && na != nb:
			return na < nb
		case !(ea && eb) && fa[i] != fb[i]:
			return fa[i] < fb[i]
		}
	}
	return len(fa) < len(fb)
}

func atoi(s string) (int, bool) {
	n := 0
	if s == "" || len(s) > 9 {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// DefaultKernel returns the path of the host kernel (FindHostKernel) as a
// PVH-bootable ELF vmlinux, extracting it once into the state directory
// (StateDir()/kernels/vmlinux-VERSION-SHA) and reusing it afterwards. The
// cached file is re-checked (ELF + PVH note) on every use.
func DefaultKernel(ctx context.Context) (string, error) {
	hk, err := FindHostKernel()
	if err != nil {
		return "", err
	}
	return CachedVmlinux(ctx, hk.BzImage, hk.Version)
}

// CachedVmlinux extracts bzImagePath into the state directory cache (see
// DefaultKernel) and returns the vmlinux path. version only names the file.
func CachedVmlinux(ctx context.Context, bzImagePath, version string) (string, error) {
	bz, err := fsutil.ReadFileLimit(bzImagePath, maxBzImageSize)
	if err != nil {
		return "", fmt.Errorf("kvm: reading kernel: %w", err)
	}
	sum := sha256.Sum256(bz)
	dir := filepath.Join(StateDir(), "kernels")
	name := "vmlinux-" + sanitizeFileName(version) + "-" + hex.EncodeToString(sum[:8])
	p := filepath.Join(dir, name)
	if f, err := os.Open(p); err == nil {
		err = checkPVH(f) // reads the headers and notes only
		f.Close()
		if err == nil {
			return p, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	out, err := ExtractVmlinux(bz)
	if err != nil {
		return "", fmt.Errorf("%s: %w", bzImagePath, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("kvm: kernel cache: %w", err)
	}
	if err := fsutil.WriteFileAtomic(p, out, 0o644); err != nil {
		return "", fmt.Errorf("kvm: kernel cache: %w", err)
	}
	return p, nil
}

func sanitizeFileName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "unknown"
	}
	return string(b)
}
