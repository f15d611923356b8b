package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// mountVolumes adds START's mounts to the workload's root, in order: each
// target is made inside the root (symlinks resolve inside it, as the
// workload would see them), then a volume's erofs disk (found by its
// virtio serial) is mounted read-only there, or a tmpfs, or a scratch
// disk's ext4 read-write (its modules loaded first).
func mountVolumes(log *slog.Logger, mounts []channel.Mount) error {
	for _, m := range mounts {
		if m.Type == channel.MountScratch {
			if err := loadScratchModules(); err != nil {
				return fmt.Errorf("scratch disk %s: %w", m.Target, err)
			}
			break
		}
	}
	for _, m := range mounts {
		if err := MkdirAllInRoot(channel.RootfsDir, m.Target, Identity{}); err != nil {
			return fmt.Errorf("volume %s: %w", m.Target, err)
		}
		r, err := ResolveInRoot(channel.RootfsDir, m.Target)
		if err != nil {
			return fmt.Errorf("volume %s: %w", m.Target, err)
		}
		dst := path.Join(channel.RootfsDir, r)
		switch m.Type {
		case channel.MountDisk:
			name, err := waitSerial(m.Serial, diskWait)
			if err != nil {
				return fmt.Errorf("volume %s: %w", m.Target, err)
			}
			dev, err := waitDisk(name, diskWait)
			if err != nil {
				return fmt.Errorf("volume %s: %w", m.Target, err)
			}
			if err := mount(dev, dst, "erofs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
				return fmt.Errorf("volume %s: %w", m.Target, err)
			}
			log.Info("volume mounted", "target", m.Target, "device", name)
		case channel.MountScratch:
			if err := mountScratch(m.Serial, dst); err != nil {
				return fmt.Errorf("scratch disk %s: %w", m.Target, err)
			}
			log.Info("scratch disk mounted", "target", m.Target, "size", m.Size)
		case channel.MountTmpfs:
			data := "mode=1777"
			if m.Size > 0 {
				data += ",size=" + strconv.FormatInt(m.Size, 10)
			}
			if err := mount("tmpfs", dst, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
				return fmt.Errorf("tmpfs %s: %w", m.Target, err)
			}
		}
	}
	return nil
}

// waitSerial finds the virtio block device whose serial is serial.
func waitSerial(serial string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		ents, _ := os.ReadDir("/sys/block")
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "serial"))
			if err == nil && strings.TrimSpace(string(b)) == serial {
				return e.Name(), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no disk with serial %s appeared within %v", serial, wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// loadScratchModules loads the modules of a scratch disk's filesystem
// (ext4 and what it needs beside the base modules).
func loadScratchModules() error {
	man, err := readManifest()
	if err != nil {
		return err
	}
	if len(man.ScratchModules) == 0 {
		if fs, err := os.ReadFile("/proc/filesystems"); err == nil && strings.Contains(string(fs), "\text4\n") {
			return nil // built into the kernel
		}
		return errors.New("the base initramfs has no ext4 module: it predates --scratch or its kernel has no ext4 module; rebuild it with 'launcher initrd build'")
	}
	return loadModuleFiles(man.ScratchModules)
}

// mountScratch mounts the scratch disk with serial at dst: ext4,
// read-write, nodev, nosuid, its root mode 1777 (as a tmpfs's) so any
// workload user may write. What the guest cached of the disk is dropped
// first: a clone's kernel probed its template's empty slot.
func mountScratch(serial, dst string) error {
	name, err := waitSerial(serial, diskWait)
	if err != nil {
		return err
	}
	dev, err := waitDisk(name, diskWait)
	if err != nil {
		return err
	}
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	err = unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0)
	f.Close()
	if err != nil {
		return fmt.Errorf("dropping cached blocks: %w", err)
	}
	if err := mount(dev, dst, "ext4", unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return err
	}
	return os.Chmod(dst, 0o777|os.ModeSticky)
}
