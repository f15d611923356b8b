package kvm

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// fakeModules writes a module tree for kernel version "9.9.9-test".
func fakeModules(t *testing.T, compress string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "9.9.9-test")
	elfObj := append([]byte("\x7fELF"), bytes.Repeat([]byte{0x42}, 200)...)
	mods := map[string]string{
		"kernel/drivers/virtio/virtio_ring.ko":        "",
		"kernel/drivers/virtio/virtio.ko":             "kernel/drivers/virtio/virtio_ring.ko",
		"kernel/drivers/virtio/virtio_mmio.ko":        "kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
		"kernel/drivers/char/virtio_console.ko":       "kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
		"kernel/drivers/char/hw_random/virtio-rng.ko": "kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
		"kernel/fs/unrelated.ko":                      "",
		"kernel/drivers/block/virtio_blk.ko":          "kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
		"kernel/crypto/crc32c_generic.ko":             "",
		"kernel/lib/libcrc32c.ko":                     "",
		"kernel/fs/erofs/erofs.ko":                    "kernel/lib/libcrc32c.ko",
		"kernel/fs/overlayfs/overlay.ko":              "",
		"kernel/net/core/failover.ko":                 "",
		"kernel/drivers/net/net_failover.ko":          "kernel/net/core/failover.ko",
		"kernel/drivers/net/virtio_net.ko":            "kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko",
		"kernel/lib/crc16.ko":                         "",
		"kernel/fs/mbcache.ko":                        "",
		"kernel/fs/jbd2/jbd2.ko":                      "",
		"kernel/fs/ext4/ext4.ko":                      "kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko",
	}
	var dep strings.Builder
	for m, d := range mods {
		name := m + compress
		var deps []string
		for _, x := range strings.Fields(d) {
			deps = append(deps, x+compress)
		}
		dep.WriteString(name + ": " + strings.Join(deps, " ") + "\n")
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		data := elfObj
		if compress == ".xz" {
			cmd := exec.Command("xz", "-c", "--check=crc32")
			cmd.Stdin = bytes.NewReader(elfObj)
			out, err := cmd.Output()
			if err != nil {
				t.Skip("xz not installed: apt-get install xz-utils")
			}
			data = out
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep.String()), 0o644)
	return root
}

// fakeAgent is a minimal static ELF executable (no program headers).
func fakeAgent() []byte { return minimalELF() }

func TestBuildBaseInitramfs(t *testing.T) {
	for _, compress := range []string{"", ".xz"} {
		t.Run("compress="+compress, func(t *testing.T) {
			mods := fakeModules(t, compress)
			opts := BaseOptions{Agent: fakeAgent(), KernelVersion: "9.9.9-test", ModulesDir: mods}
			a, err := BuildBaseInitramfs(opts)
			if err != nil {
				t.Fatal(err)
			}
			b, err := BuildBaseInitramfs(opts)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Fatal("two builds from the same inputs differ")
			}
			files := cpioList(t, a)
			for _, want := range []string{"init", "dev/console", ".bulwark/base.json", ".bulwark/modules/virtio_ring.ko", ".bulwark/modules/virtio_console.ko", ".bulwark/modules/virtio_rng.ko"} {
				if !files[want] {
					t.Errorf("archive lacks %s: %v", want, files)
				}
			}
			if files[".bulwark/modules/unrelated.ko"] {
				t.Error("an unrequested module was included")
			}
			var man channel.BaseManifest
			if err := json.Unmarshal(cpioFile(t, a, ".bulwark/base.json"), &man); err != nil {
				t.Fatal(err)
			}
			pos := map[string]int{}
			for i, m := range man.Modules {
				pos[m] = i
			}
			if len(man.Modules) != 10 || pos["libcrc32c.ko"] > pos["erofs.ko"] || pos["virtio_ring.ko"] > pos["virtio.ko"] || pos["virtio.ko"] > pos["virtio_mmio.ko"] || pos["virtio.ko"] > pos["virtio_console.ko"] {
				t.Errorf("load order %v: dependencies must come first", man.Modules)
			}
			// By default every module loads at boot, the disk's too.
			if len(man.DiskModules) != 0 || pos["virtio_blk.ko"] < pos["virtio.ko"] || pos["erofs.ko"] < pos["libcrc32c.ko"] {
				t.Errorf("modules %v, disk modules %v", man.Modules, man.DiskModules)
			}
			// Modules asked to load at mount time are listed apart, without
			// those already loaded at boot, in order.
			opts.Modules = []string{"virtio_mmio"}
			opts.DiskModules = []string{"virtio_blk", "erofs"}
			c, err := BuildBaseInitramfs(opts)
			if err != nil {
				t.Fatal(err)
			}
			var man2 channel.BaseManifest
			if err := json.Unmarshal(cpioFile(t, c, ".bulwark/base.json"), &man2); err != nil {
				t.Fatal(err)
			}
			if want := "virtio_blk.ko libcrc32c.ko erofs.ko"; strings.Join(man2.DiskModules, " ") != want {
				t.Errorf("disk modules %v, want %s", man2.DiskModules, want)
			}
			// The network's modules are listed apart, loaded only for a
			// workload with a network; virtio and virtio_ring load at boot.
			if want := "failover.ko net_failover.ko virtio_net.ko"; strings.Join(man.NetModules, " ") != want {
				t.Errorf("net modules %v, want %s", man.NetModules, want)
			}
			// So are a scratch disk's, loaded only for a workload with one.
			if want := "crc16.ko mbcache.ko jbd2.ko ext4.ko"; strings.Join(man.ScratchModules, " ") != want {
				t.Errorf("scratch modules %v, want %s", man.ScratchModules, want)
			}
			if got := cpioFile(t, a, ".bulwark/modules/virtio.ko"); !bytes.HasPrefix(got, []byte("\x7fELF")) {
				t.Errorf("module not decompressed: %q", got[:8])
			}
		})
	}
}

func TestBuildBaseInitramfsErrors(t *testing.T) {
	mods := fakeModules(t, "")
	for name, opts := range map[string]BaseOptions{
		"no agent":        {KernelVersion: "9.9.9-test", ModulesDir: mods},
		"agent not ELF":   {Agent: []byte("#!/bin/sh"), KernelVersion: "9.9.9-test", ModulesDir: mods},
		"agent dynamic":   {Agent: dynamicELF(t), KernelVersion: "9.9.9-test", ModulesDir: mods},
		"no version":      {Agent: fakeAgent(), ModulesDir: mods},
		"version path":    {Agent: fakeAgent(), KernelVersion: "../x", ModulesDir: mods},
		"missing version": {Agent: fakeAgent(), KernelVersion: "1.0", ModulesDir: mods},
		"missing module":  {Agent: fakeAgent(), KernelVersion: "9.9.9-test", ModulesDir: mods, Modules: []string{"nope"}},
	} {
		if _, err := BuildBaseInitramfs(opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestBuildImageDisk checks the disk fsck.erofs extracts: whiteouts and
// opaque directories applied, hard links, symlinks, owners, modes and times
// kept, config placed; the same image gives the same bytes, sealed.
func TestBuildImageDisk(t *testing.T) {
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Skip("busybox not installed: apt-get install busybox-static")
	}
	cfg := v1.Config{Entrypoint: []string{"/bin/sh"}, Cmd: []string{"-c", "true"}, Env: []string{"A=1"}, WorkingDir: "/w", User: "app"}
	a := buildDisk(t, testImage(t, cfg))
	b := buildDisk(t, testImage(t, cfg))
	if a.Digest != b.Digest || a.Size != b.Size {
		t.Fatalf("two builds of the same image differ: %s (%d bytes), %s (%d bytes)", a.Digest, a.Size, b.Digest, b.Size)
	}
	if !strings.HasPrefix(a.Digest, "sha256:") || a.Size%4096 != 0 {
		t.Fatalf("digest %s, size %d", a.Digest, a.Size)
	}
	// Sealed: no write, no truncation.
	if _, err := a.File.WriteAt([]byte("x"), 0); err == nil {
		t.Error("the disk memfd is writable")
	}
	if err := a.File.Truncate(a.Size + 4096); err == nil {
		t.Error("the disk memfd can grow")
	}
	data, err := io.ReadAll(io.NewSectionReader(a.File, 0, a.Size))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data); "sha256:"+hex.EncodeToString(sum[:]) != a.Digest {
		t.Fatal("Digest is not the digest of the disk's bytes")
	}
	out := mountDisk(t, data)
	for _, want := range []string{"rootfs/bin/busybox", "rootfs/opq/new", "rootfs/links/a", "rootfs/links/b", "config.json"} {
		if _, err := os.Lstat(filepath.Join(out, want)); err != nil {
			t.Errorf("disk lacks %s", want)
		}
	}
	for _, gone := range []string{"rootfs/etc/gone", "rootfs/opq/old", "rootfs/etc/.wh.gone", "rootfs/opq/.wh..wh..opq"} {
		if _, err := os.Lstat(filepath.Join(out, gone)); err == nil {
			t.Errorf("disk has %s", gone)
		}
	}
	if l, err := os.Readlink(filepath.Join(out, "rootfs/bin/sh")); err != nil || l != "busybox" {
		t.Errorf("symlink rootfs/bin/sh -> %q, %v", l, err)
	}
	var la, lb syscall.Stat_t
	if err := syscall.Stat(filepath.Join(out, "rootfs/links/a"), &la); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Join(out, "rootfs/links/b"), &lb); err != nil {
		t.Fatal(err)
	}
	if la.Ino != lb.Ino || la.Nlink != 2 {
		t.Errorf("hard link: inodes %d, %d, %d links", la.Ino, lb.Ino, la.Nlink)
	}
	cj, err := os.ReadFile(filepath.Join(out, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ic channel.ImageConfig
	if err := json.Unmarshal(cj, &ic); err != nil {
		t.Fatal(err)
	}
	if ic.User != "app" || ic.WorkingDir != "/w" || len(ic.Entrypoint) != 1 || len(ic.Cmd) != 2 || ic.Env[0] != "A=1" {
		t.Errorf("config = %+v", ic)
	}
}

// mountDisk mounts an erofs image read-only through a loop device, as the
// guest does through virtio-blk, and returns the mount point.
func mountDisk(t *testing.T, data []byte) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("mounting the disk to check it needs root")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.erofs")
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if o, err := exec.Command("mount", "-t", "erofs", "-o", "loop,ro", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount -t erofs -o loop: %v\n%s", err, o)
	}
	t.Cleanup(func() {
		if o, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v\n%s", err, o)
		}
	})
	return mnt
}

// TestBuildImageDiskMeta: owners, set-id modes and times of the layers'
// entries reach the disk as the layer says, not as staging made them.
func TestBuildImageDiskMeta(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("staging an image's owners needs root")
	}
	mtime := time.Unix(1700000000, 0) // tarLayer's
	img, err := mutate.AppendLayers(empty.Image, tarLayer(t, []tarEntry{
		{name: "d", typ: tar.TypeDir, mode: 0o750, uid: 7, gid: 8},
		{name: "d/suid", typ: tar.TypeReg, mode: 0o4755, uid: 0, gid: 0, body: []byte("x")},
		{name: "d/owned", typ: tar.TypeReg, mode: 0o640, uid: 1000, gid: 1001, body: []byte("y")},
		{name: "d/fifo", typ: tar.TypeFifo, mode: 0o600, uid: 5, gid: 5},
	}))
	if err != nil {
		t.Fatal(err)
	}
	d := buildDisk(t, img)
	data, err := io.ReadAll(io.NewSectionReader(d.File, 0, d.Size))
	if err != nil {
		t.Fatal(err)
	}
	out := mountDisk(t, data)
	for _, tc := range []struct {
		path     string
		mode     uint32
		uid, gid uint32
	}{
		{"rootfs/d", syscall.S_IFDIR | 0o750, 7, 8},
		{"rootfs/d/suid", syscall.S_IFREG | 0o4755, 0, 0},
		{"rootfs/d/owned", syscall.S_IFREG | 0o640, 1000, 1001},
		{"rootfs/d/fifo", syscall.S_IFIFO | 0o600, 5, 5},
	} {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(out, tc.path), &st); err != nil {
			t.Errorf("%s: %v", tc.path, err)
			continue
		}
		if st.Mode != tc.mode || st.Uid != tc.uid || st.Gid != tc.gid {
			t.Errorf("%s: mode %o uid %d gid %d, want %o %d %d", tc.path, st.Mode, st.Uid, st.Gid, tc.mode, tc.uid, tc.gid)
		}
		if st.Mtim.Sec != mtime.Unix() {
			t.Errorf("%s: mtime %d, want %d", tc.path, st.Mtim.Sec, mtime.Unix())
		}
	}
}

func TestImageInitramfsRejectsEscapes(t *testing.T) {
	for _, ents := range [][]tarEntry{
		{{name: "../evil", typ: tar.TypeReg, mode: 0o644, body: []byte("x")}},
		{{name: "a/../../evil", typ: tar.TypeReg, mode: 0o644}},
		{{name: "x", typ: tar.TypeLink, link: "../../etc/shadow"}},
		// A path through a symlink: the kernel's unpacker would follow it.
		{{name: "evil", typ: tar.TypeSymlink, link: "/", mode: 0o777}, {name: "evil/init", typ: tar.TypeReg, mode: 0o755, body: []byte("x")}},
		{{name: "up", typ: tar.TypeSymlink, link: "../..", mode: 0o777}, {name: "up/x", typ: tar.TypeDir, mode: 0o755}},
		{{name: "f", typ: tar.TypeReg, mode: 0o644}, {name: "f/g", typ: tar.TypeReg, mode: 0o644}},
	} {
		_, err := tarEntries(tarReader(t, ents), ImageOptions{MaxSize: 1 << 20})
		if err == nil {
			t.Errorf("%q accepted", ents[len(ents)-1].name)
			continue
		}
		t.Logf("refused: %v", err)
	}
	// Size limit.
	big := []tarEntry{{name: "big", typ: tar.TypeReg, mode: 0o644, body: make([]byte, 2048)}}
	if _, err := tarEntries(tarReader(t, big), ImageOptions{MaxSize: 1024}); err == nil {
		t.Error("size limit not enforced")
	}
}

// TestImageInitramfsLimits: a layer that costs too much to hold (too many
// files, too long a path or name) is refused with the limit named; the same
// input within the limits is accepted.
func TestImageInitramfsLimits(t *testing.T) {
	many := make([]tarEntry, 0, 11)
	for i := range 11 {
		many = append(many, tarEntry{name: fmt.Sprintf("f%d", i), typ: tar.TypeReg, mode: 0o644})
	}
	longName := strings.Repeat("n", MaxImageName+1)
	deep := strings.Repeat("d/", MaxImagePath/2) + "f"
	for _, tc := range []struct {
		name string
		ents []tarEntry
		opts ImageOptions
		want string // "" accepted
	}{
		{"files within", many, ImageOptions{MaxFiles: 11}, ""},
		{"one file too many", many, ImageOptions{MaxFiles: 10}, "more than 10 files"},
		{"a name at NAME_MAX", []tarEntry{{name: longName[1:], typ: tar.TypeReg, mode: 0o644}}, ImageOptions{}, ""},
		{"a name past NAME_MAX", []tarEntry{{name: longName, typ: tar.TypeReg, mode: 0o644}}, ImageOptions{}, "longer than 255 bytes"},
		{"a path past PATH_MAX", []tarEntry{{name: deep, typ: tar.TypeReg, mode: 0o644}}, ImageOptions{}, "path longer than 4096 bytes"},
		{"a link target past PATH_MAX", []tarEntry{{name: "f", typ: tar.TypeReg, mode: 0o644}, {name: "l", typ: tar.TypeLink, link: deep}}, ImageOptions{}, "bad target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tarEntries(tarReader(t, tc.ents), tc.opts.withDefaults())
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func tarReader(t *testing.T, ents []tarEntry) *bytes.Reader {
	l := tarLayer(t, ents)
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	buf.ReadFrom(rc)
	return bytes.NewReader(buf.Bytes())
}

func cpioTool(t *testing.T) string {
	p, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio not installed: apt-get install cpio")
	}
	return p
}

func cpioList(t *testing.T, arch []byte) map[string]bool {
	t.Helper()
	cmd := exec.Command(cpioTool(t), "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(arch)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	m := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		m[l] = true
	}
	return m
}

func cpioVerbose(t *testing.T, arch []byte) string {
	t.Helper()
	cmd := exec.Command(cpioTool(t), "-t", "-v", "--quiet", "--numeric-uid-gid")
	cmd.Stdin = bytes.NewReader(arch)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -tv: %v", err)
	}
	return string(out)
}

func cpioFile(t *testing.T, arch []byte, name string) []byte {
	t.Helper()
	cmd := exec.Command(cpioTool(t), "-i", "--quiet", "--to-stdout", name)
	cmd.Stdin = bytes.NewReader(arch)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -i %s: %v", name, err)
	}
	return out
}

// dynamicELF returns a dynamically linked executable from the host.
func dynamicELF(t *testing.T) []byte {
	for _, p := range []string{"/bin/ls", "/usr/bin/env"} {
		if b, err := os.ReadFile(p); err == nil {
			return b
		}
	}
	t.Skip("no dynamically linked binary found")
	return nil
}

// TestBuildBaseInitramfsEmptyAgent: no agent bytes (an empty file read, or
// none given) is refused with a message that says the agent is empty.
func TestBuildBaseInitramfsEmptyAgent(t *testing.T) {
	mods := fakeModules(t, "")
	for name, agent := range map[string][]byte{"nil": nil, "empty": {}} {
		_, err := BuildBaseInitramfs(BaseOptions{Agent: agent, KernelVersion: "9.9.9-test", ModulesDir: mods})
		if err == nil || !strings.Contains(err.Error(), "the agent binary is empty (0 bytes)") {
			t.Errorf("%s agent: %v", name, err)
		}
	}
}
