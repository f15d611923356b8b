package kvm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Scratch disks are writable: each is an ext4 filesystem on a sparse host
// file of its own, made empty by the launcher (mkfs.ext4 from e2fsprogs on
// the host: the guest has no mkfs), given to QEMU as a writable virtio-blk
// disk and mounted by the agent. The guest kernel's ext4 is a module
// (Debian: CONFIG_EXT4_FS=m), carried in the base initramfs and loaded
// only for a workload with a scratch disk (BaseOptions.ScratchModules).
// ext4 rather than erofs or tmpfs: it is the writable disk filesystem the
// kernel has; its metadata checksums need crc32c, which the base modules
// load already.

// Bounds of a scratch disk (measure.MinScratchBytes, MaxScratchBytes and
// MaxScratch are the same numbers, checked before anything is made).
const (
	MaxScratch      = 4
	MinScratchBytes = 16 << 20
	MaxScratchBytes = 1 << 40
	// scratchSlotSize is the size of a template's scratch slots: the size
	// its guest probed, so any scratch disk of a clone fits in it (the
	// filesystem knows its own size; QEMU refuses any access past the
	// end of the clone's file).
	scratchSlotSize = MaxScratchBytes
)

// ScratchDisk is a writable scratch disk (CreateScratchDisk) and where the
// workload sees it.
type ScratchDisk struct {
	File   *os.File // the disk file, open read-write
	Target string
	Size   int64
}

// mkfsExt4 is the ext4 builder CreateScratchDisk runs (Debian: e2fsprogs).
var mkfsExt4 = "mkfs.ext4"

// CreateScratchDisk creates path (which must not exist; mode 0600) as a
// sparse file of size bytes holding an empty ext4 filesystem (no journal:
// a scratch disk does not outlive its sandbox; no reserved blocks; the
// root directory the agent makes mode 1777) and returns it open
// read-write. The caller removes path when the sandbox is removed (or at
// once: QEMU keeps the file it was given).
func CreateScratchDisk(ctx context.Context, path string, size int64) (*os.File, error) {
	if size < MinScratchBytes || size > MaxScratchBytes || size%(1<<20) != 0 {
		return nil, fmt.Errorf("kvm: scratch disk of %d bytes: want 16 MiB to 1 TiB, a whole number of MiB", size)
	}
	mkfs, err := exec.LookPath(mkfsExt4)
	if err != nil {
		return nil, errors.New("kvm: mkfs.ext4 not found: scratch disks need it (apt-get install e2fsprogs, or make deps)")
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("kvm: scratch disk: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(path)
		}
	}()
	if err := f.Truncate(size); err != nil {
		return nil, fmt.Errorf("kvm: scratch disk: %w", err)
	}
	// The open file, not the path: nothing can be swapped under mkfs.
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-t", "ext4", "-m", "0", "-O", "^has_journal",
		"-E", "root_owner=0:0", "-L", "scratch", "/proc/self/fd/3")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.ExtraFiles = []*os.File{f}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("kvm: mkfs.ext4: %w: %s", err, strings.TrimSpace(out.String()))
	}
	if st, err := f.Stat(); err != nil || st.Size() != size {
		return nil, fmt.Errorf("kvm: scratch disk: mkfs.ext4 left %s at another size than %d bytes (%v)", path, size, err)
	}
	ok = true
	return f, nil
}

// scratchSerial is the virtio-blk serial of scratch disk i, by which the
// agent finds it.
func scratchSerial(i int) string { return "bulwark-scratch" + strconv.Itoa(i) }

// scratchPlaceholder is what a template's (or a clone's unused) scratch
// slot holds: scratchSlotSize zeros in a sealed memfd (no memory; a write
// fails).
func scratchPlaceholder() (*os.File, error) {
	return sealedZeros("bulwark-scratch-slot", scratchSlotSize)
}
