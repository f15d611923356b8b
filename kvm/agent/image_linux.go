package agent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

const (
	// imageDevice is the image disk: the sandbox's first virtio-blk disk
	// (volumes come after it, found by their serial).
	imageDevice = "vda"
	// diskWait bounds the wait for the disk after virtio_blk is loaded.
	diskWait = 20 * time.Second
	// maxImageConfig bounds the image config read from the disk.
	maxImageConfig = 1 << 20
	// upperDir holds the tmpfs that takes the workload's writes.
	upperDir = "/run/bulwark/upper"
)

// imageMount is the result of mounting the image disk, produced once and
// awaited by whoever needs the workload's root.
type imageMount struct {
	done chan struct{}
	cfg  channel.ImageConfig
	err  error
}

// mountImageAsync starts mounting the image (mountImage) and returns at
// once: the disk modules load and the disk is probed while the host
// attests the guest.
func mountImageAsync(log *slog.Logger) *imageMount {
	m := &imageMount{done: make(chan struct{})}
	go func() {
		defer close(m.done)
		m.cfg, m.err = mountImage(log)
	}()
	return m
}

// wait returns the image config once the workload's root is mounted.
func (m *imageMount) wait() (channel.ImageConfig, error) {
	<-m.done
	return m.cfg, m.err
}

// mountImage loads the disk modules, waits for the image disk, mounts it
// read-only (erofs) at channel.ImageMount and the workload's root, the
// disk's root filesystem under a tmpfs upper layer (overlayfs), at
// channel.RootfsDir, with its pseudo filesystems. It returns the image's
// config from the disk.
func mountImage(log *slog.Logger) (channel.ImageConfig, error) {
	var cfg channel.ImageConfig
	start := time.Now()
	man, err := readManifest()
	if err != nil {
		return cfg, err
	}
	if err := loadModuleFiles(man.DiskModules); err != nil {
		return cfg, err
	}
	loaded := time.Since(start)
	dev, err := waitDisk(imageDevice, diskWait)
	if err != nil {
		return cfg, err
	}
	probed := time.Since(start)
	if err := checkImageDisk(dev); err != nil {
		return cfg, err
	}
	if err := mount(dev, channel.ImageMount, "erofs", unix.MS_RDONLY|unix.MS_NODEV, ""); err != nil {
		return cfg, fmt.Errorf("the image disk: %w", err)
	}
	if cfg, err = readImageConfig(filepath.Join(channel.ImageMount, channel.DiskConfig)); err != nil {
		return cfg, err
	}
	if err := mount("tmpfs", upperDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return cfg, err
	}
	for _, d := range []string{"data", "work"} {
		if err := os.Mkdir(filepath.Join(upperDir, d), 0o755); err != nil {
			return cfg, fmt.Errorf("overlay: %w", err)
		}
	}
	lower := filepath.Join(channel.ImageMount, channel.DiskRootfs)
	opts := "lowerdir=" + lower + ",upperdir=" + upperDir + "/data,workdir=" + upperDir + "/work"
	if err := mount("overlay", channel.RootfsDir, "overlay", 0, opts); err != nil {
		return cfg, fmt.Errorf("the workload's root: %w", err)
	}
	if err := mountRootfs(); err != nil {
		return cfg, err
	}
	log.Info("image disk mounted", "device", dev, "took", time.Since(start).Round(time.Millisecond),
		"modules_loaded_at", loaded.Round(time.Millisecond), "disk_found_at", probed.Round(time.Millisecond))
	return cfg, nil
}

// erofsMagic is at byte 1024 of an erofs image (EROFS_SUPER_MAGIC_V1).
const erofsMagic = 0xE0F5E1E2

// checkImageDisk drops what the guest cached of the disk (a clone's
// kernel probed its template's empty slot at boot; its cached pages are of
// that slot, not of the clone's image) and checks that the disk holds an
// erofs image.
func checkImageDisk(dev string) error {
	f, err := os.Open(dev)
	if err != nil {
		return fmt.Errorf("the image disk: %w", err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0); err != nil {
		return fmt.Errorf("the image disk: dropping cached blocks: %w", err)
	}
	var b [4]byte
	if _, err := f.ReadAt(b[:], 1024); err != nil {
		return fmt.Errorf("the image disk: %w", err)
	}
	if binary.LittleEndian.Uint32(b[:]) != erofsMagic {
		return errors.New("no image in this sandbox: its disk slot holds no erofs image")
	}
	return nil
}

func readManifest() (channel.BaseManifest, error) {
	var man channel.BaseManifest
	b, err := os.ReadFile(channel.BaseManifestPath)
	if err != nil {
		return man, fmt.Errorf("reading the module manifest: %w", err)
	}
	if err := json.Unmarshal(b, &man); err != nil {
		return man, fmt.Errorf("module manifest: %w", err)
	}
	return man, nil
}

// loadModuleFiles loads the named modules from channel.ModulesDir in order.
func loadModuleFiles(names []string) error {
	for _, m := range names {
		if strings.Contains(m, "/") {
			return fmt.Errorf("module manifest: bad name %q", m)
		}
		f, err := os.Open(filepath.Join(channel.ModulesDir, m))
		if err != nil {
			return fmt.Errorf("module %s: %w", m, err)
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("loading module %s: %w", m, err)
		}
	}
	return nil
}

// waitDisk waits for block device name to appear with a non-zero size and
// returns its device node (devtmpfs's, or one made from sysfs).
func waitDisk(name string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	sys := filepath.Join("/sys/block", name)
	for {
		size, err := os.ReadFile(filepath.Join(sys, "size"))
		if err == nil && strings.TrimSpace(string(size)) != "0" {
			dev := filepath.Join("/dev", name)
			if st, err := os.Stat(dev); err == nil && st.Mode()&os.ModeDevice != 0 {
				return dev, nil
			}
			mm, err := os.ReadFile(filepath.Join(sys, "dev"))
			if err == nil {
				var maj, min uint32
				if _, err := fmt.Sscanf(strings.TrimSpace(string(mm)), "%d:%d", &maj, &min); err == nil {
					node := "/run/bulwark-disk"
					_ = os.Remove(node)
					if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(unix.Mkdev(maj, min))); err != nil {
						return "", fmt.Errorf("mknod %s: %w", node, err)
					}
					return node, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the image disk (%s) did not appear within %v: no image in this sandbox?", name, wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readImageConfig reads the image's config (at most maxImageConfig bytes,
// strictly: unknown fields are refused).
func readImageConfig(p string) (channel.ImageConfig, error) {
	var cfg channel.ImageConfig
	f, err := os.Open(p)
	if err != nil {
		return cfg, fmt.Errorf("no image config on the image disk: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxImageConfig+1))
	if err != nil {
		return cfg, fmt.Errorf("image config: %w", err)
	}
	if len(b) > maxImageConfig {
		return cfg, fmt.Errorf("image config: larger than %d bytes", maxImageConfig)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("image config: %w", err)
	}
	return cfg, nil
}
