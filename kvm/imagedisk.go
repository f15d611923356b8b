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
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulwark-project/bulwark/kvm/channel"
	"github.com/bulwark-project/bulwark/kvm/cpio"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// ImageDisk is an image's root filesystem as a read-only erofs disk image
// in a sealed memfd: nothing can change its bytes after Digest was taken,
// and QEMU reads exactly them (a read-only virtio-blk disk).
//
// The disk's root holds the image's files under channel.DiskRootfs and the
// config the agent applies at channel.DiskConfig. The agent mounts it
// read-only under a tmpfs upper layer (overlayfs), so the workload may
// write, and no write reaches the disk.
type ImageDisk struct {
	// File is the sealed memfd (write, grow, shrink and seal sealed): the
	// erofs image, then zeros up to DiskSlotSize.
	File *os.File
	// Digest is "sha256:<hex>" of the erofs image's bytes, Size their
	// number (the zeros after them are not hashed: they are zeros by
	// construction, sealed).
	Digest string
	Size   int64
}

// Close releases the memfd.
func (d *ImageDisk) Close() error {
	if d == nil || d.File == nil {
		return nil
	}
	return d.File.Close()
}

// mkfsErofs is the erofs builder BuildImageDisk runs (Debian: erofs-utils).
var mkfsErofs = "mkfs.erofs"

// BuildImageDisk builds the disk for img: its layers applied in order
// (whiteouts and opaque directories honoured, by mutate.Extract) into a
// private staging directory, then mkfs.erofs with fixed timestamps and UUID
// so the same image gives the same disk bytes and digest. Modes, owners,
// modification times, symlinks, hard links and FIFOs are kept; character
// and block devices are skipped (the guest mounts devtmpfs on /dev). The
// bounds of opts hold before anything is written.
func BuildImageDisk(ctx context.Context, img v1.Image, opts ImageOptions) (*ImageDisk, error) {
	opts = opts.withDefaults()
	mkfs, err := exec.LookPath(mkfsErofs)
	if err != nil {
		return nil, errors.New("kvm: mkfs.erofs not found: the image disk needs it (apt-get install erofs-utils, or make deps)")
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("kvm: image config: %w", err)
	}
	ic := channel.ImageConfig{
		Entrypoint: cf.Config.Entrypoint,
		Cmd:        cf.Config.Cmd,
		Env:        cf.Config.Env,
		WorkingDir: cf.Config.WorkingDir,
		User:       cf.Config.User,
	}
	cj, err := json.MarshalIndent(ic, "", "  ")
	if err != nil {
		return nil, err
	}
	rc := mutate.Extract(img)
	ents, err := tarEntries(rc, opts)
	rc.Close()
	if err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp("", "bulwark-image-")
	if err != nil {
		return nil, fmt.Errorf("kvm: image disk: %w", err)
	}
	defer os.RemoveAll(stage)
	if err := stageTree(stage, ents, append(cj, '\n')); err != nil {
		return nil, err
	}
	var newest int64
	for _, e := range ents {
		newest = max(newest, e.h.MTime)
	}
	return mkfsDisk(ctx, mkfs, stage, newest)
}

// stageTree writes the image's entries under dir/rootfs and the config at
// dir/config.json, with their owners, modes and times. tarEntries already
// refused any entry that would lie under a symlink or a non-directory, so
// every path is created inside dir.
func stageTree(dir string, ents []entry, config []byte) error {
	sort.SliceStable(ents, func(i, j int) bool { return ents[i].h.Name < ents[j].h.Name })
	root := filepath.Join(dir, strings.TrimPrefix(channel.DiskRootfs, "/"))
	if err := os.Mkdir(root, 0o755); err != nil {
		return fmt.Errorf("kvm: image disk: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, strings.TrimPrefix(channel.DiskConfig, "/")), config, 0o644); err != nil {
		return fmt.Errorf("kvm: image disk: %w", err)
	}
	linked := map[uint32]string{} // hard-link inode -> first member's path
	var dirs []entry
	for _, e := range ents {
		rel := strings.TrimPrefix(e.h.Name, "rootfs/")
		p := filepath.Join(root, rel)
		perm := os.FileMode(e.h.Mode & 0o777)
		var err error
		switch e.h.Mode & cpio.TypeMask {
		case cpio.TypeDir:
			err = os.Mkdir(p, 0o700) // its own mode once its entries are in
			dirs = append(dirs, e)
		case cpio.TypeReg:
			if e.h.NLink > 1 {
				if first, ok := linked[e.h.Ino]; ok {
					err = os.Link(first, p)
					break
				}
				linked[e.h.Ino] = p
			}
			err = os.WriteFile(p, e.data, 0o600)
		case cpio.TypeSymlink:
			err = os.Symlink(string(e.data), p)
		case cpio.TypeFIFO:
			err = unix.Mkfifo(p, 0o600)
		default:
			err = fmt.Errorf("unexpected entry type %o", e.h.Mode&cpio.TypeMask)
		}
		if err == nil && e.h.Mode&cpio.TypeMask != cpio.TypeDir {
			err = setMeta(p, e.h, perm)
		}
		if err != nil {
			return fmt.Errorf("kvm: image disk: /%s: %w", rel, err)
		}
	}
	// Directories last, deepest first: creating their entries changed their times.
	for i := len(dirs) - 1; i >= 0; i-- {
		e := dirs[i]
		p := filepath.Join(root, strings.TrimPrefix(e.h.Name, "rootfs/"))
		if err := setMeta(p, e.h, os.FileMode(e.h.Mode&0o777)); err != nil {
			return fmt.Errorf("kvm: image disk: %s: %w", e.h.Name, err)
		}
	}
	for _, p := range []string{root, dir} {
		if err := os.Chtimes(p, time.Unix(0, 0), time.Unix(0, 0)); err != nil {
			return fmt.Errorf("kvm: image disk: %w", err)
		}
	}
	return os.Chmod(dir, 0o755)
}

// setMeta gives p its owner, then its mode (chown clears set-id bits), then
// its times; a symlink gets its owner and times only.
func setMeta(p string, h cpio.Header, perm os.FileMode) error {
	if err := os.Lchown(p, int(h.UID), int(h.GID)); err != nil {
		return err
	}
	isLink := h.Mode&cpio.TypeMask == cpio.TypeSymlink
	if !isLink {
		mode := perm
		if h.Mode&0o4000 != 0 {
			mode |= os.ModeSetuid
		}
		if h.Mode&0o2000 != 0 {
			mode |= os.ModeSetgid
		}
		if h.Mode&0o1000 != 0 {
			mode |= os.ModeSticky
		}
		if err := os.Chmod(p, mode); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{{Sec: h.MTime}, {Sec: h.MTime}}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// mkfsDisk runs mkfs.erofs on dir into a new memfd, seals it and hashes it.
// The build time is newest, the newest modification time in the tree:
// erofs-utils clamps every file's time to it (SOURCE_DATE_EPOCH), so all
// are kept and the superblock is the same on every build.
// BuildVolumeDisk builds a read-only volume's disk from the host
// directory dir: an erofs image of its tree (owners, modes and times as
// on the host; no extended attributes; superblock time and UUID fixed),
// in a sealed memfd, with the digest of its bytes. What is measured is
// what the guest reads: a file changed in dir afterwards is not in it.
// Close the disk when the sandbox is done.
func BuildVolumeDisk(ctx context.Context, dir string) (*ImageDisk, error) {
	mkfs, err := exec.LookPath(mkfsErofs)
	if err != nil {
		return nil, errors.New("kvm: mkfs.erofs not found: volumes need it (apt-get install erofs-utils, or make deps)")
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("kvm: volume: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("kvm: volume: %s is not a directory", dir)
	}
	return mkfsDisk(ctx, mkfs, dir, 0)
}

func mkfsDisk(ctx context.Context, mkfs, dir string, newest int64) (*ImageDisk, error) {
	f, err := newMemfd("bulwark-image")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	// Fixed build time and UUID, no extended attributes (the staging
	// directory's are the host's, not the image's): same tree, same bytes.
	cmd := exec.CommandContext(ctx, mkfs, "--quiet", "-x-1", "-U", "00000000-0000-0000-0000-000000000000",
		"/proc/self/fd/3", dir)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SOURCE_DATE_EPOCH=" + strconv.FormatInt(newest, 10)}
	cmd.ExtraFiles = []*os.File{f}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("kvm: mkfs.erofs: %w: %s", err, strings.TrimSpace(out.String()))
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	n := st.Size()
	if n == 0 || n%512 != 0 {
		return nil, fmt.Errorf("kvm: mkfs.erofs wrote %d bytes, not a disk image", n)
	}
	if n > DiskSlotSize {
		return nil, fmt.Errorf("kvm: the image disk is %d bytes, more than the disk slot's %d", n, DiskSlotSize)
	}
	// Zeros up to the slot's size (a hole: no memory), then sealed.
	if err := f.Truncate(DiskSlotSize); err != nil {
		return nil, fmt.Errorf("kvm: image disk: %w", err)
	}
	if err := seal(f); err != nil {
		return nil, fmt.Errorf("kvm: %w", err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, n)); err != nil {
		return nil, fmt.Errorf("kvm: hashing the image disk: %w", err)
	}
	ok = true
	return &ImageDisk{File: f, Digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

// DiskSlotSize is the size of every sandbox's disk as the guest sees it:
// the erofs image, then zeros. One size for all, so a template's guest,
// which probed its disk slot at boot, sees the same disk size as each
// clone that resumes with its own image in that slot.
const DiskSlotSize = 2 << 30

// diskPlaceholder is what a disk slot holds without an image (a template,
// or a sandbox run without one): DiskSlotSize zeros, no erofs.
func diskPlaceholder() (*os.File, error) { return sealedZeros("bulwark-disk-slot", DiskSlotSize) }

// zeroMemfd is a memfd of size zeros: a hole, which costs no memory until
// written.
func zeroMemfd(name string, size int64) (*os.File, error) {
	f, err := newMemfd(name)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("kvm: %w", err)
	}
	return f, nil
}

// sealedZeros is zeroMemfd sealed against every change: a placeholder
// disk that nothing can write.
func sealedZeros(name string, size int64) (*os.File, error) {
	f, err := zeroMemfd(name, size)
	if err != nil {
		return nil, err
	}
	if err := seal(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("kvm: %w", err)
	}
	return f, nil
}
