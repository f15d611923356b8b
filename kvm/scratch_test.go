package kvm

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func needMkfsExt4(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath(mkfsExt4); err != nil {
		t.Skip("mkfs.ext4 not installed: apt-get install e2fsprogs (make deps)")
	}
}

// TestCreateScratchDisk: a scratch disk is a sparse file of exactly its
// size holding an empty ext4 filesystem; sizes out of bounds and an
// existing path are refused, and nothing is left behind by a refusal.
func TestCreateScratchDisk(t *testing.T) {
	needMkfsExt4(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "s0")
	f, err := CreateScratchDisk(context.Background(), p, MinScratchBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != MinScratchBytes || st.Mode().Perm() != 0o600 {
		t.Errorf("size %d mode %v, want %d 0600", st.Size(), st.Mode(), MinScratchBytes)
	}
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], 1024+0x38); err != nil || binary.LittleEndian.Uint16(magic[:]) != 0xEF53 {
		t.Errorf("no ext4 superblock: %x %v", magic, err)
	}
	if _, err := CreateScratchDisk(context.Background(), p, MinScratchBytes); !errors.Is(err, os.ErrExist) {
		t.Errorf("an existing path: %v, want ErrExist", err)
	}
	for _, size := range []int64{0, MinScratchBytes - 1<<20, MinScratchBytes + 1, MaxScratchBytes + 1<<20} {
		q := filepath.Join(dir, "bad")
		if _, err := CreateScratchDisk(context.Background(), q, size); err == nil || !strings.Contains(err.Error(), "want 16 MiB to 1 TiB") {
			t.Errorf("size %d: %v", size, err)
		}
		if _, err := os.Lstat(q); err == nil {
			t.Errorf("size %d: %s left behind", size, q)
		}
	}
}

// scratchScript writes to two scratch disks as the image's non-root user
// and reads back, shows the mounts, and fills the small disk past its
// size: ENOSPC in the guest, nothing written past the host file's end.
const scratchScript = `set -e
echo written-in-the-guest > /scratch/a/f; echo "read $(cat /scratch/a/f) as $(id -u)"
echo two > /scratch/b/g; cat /scratch/b/g
grep ' /scratch/' /proc/mounts | while read dev dir fs opts rest; do echo "mount $dir $fs ${opts%%,*},$(echo $opts | grep -o 'nosuid,nodev')"; done
ls -ld /scratch/a | grep -o '^drwxrwxrwt'
if /bin/busybox dd if=/dev/zero of=/scratch/a/fill bs=1M count=64 2>/dev/null; then echo fill-fitted; else echo fill-refused; fi
`

// TestSandboxScratchDisks: a cold boot with two scratch disks: the
// workload writes to them (as a user other than root: their root is mode
// 1777) and reads its writes back; each is ext4 mounted rw, nosuid,
// nodev; a disk is full at its size. Afterwards the host's file holds
// what the guest wrote (debugfs reads it) and is no larger than it was.
func TestSandboxScratchDisks(t *testing.T) {
	e := bootEnv(t)
	needMkfsExt4(t)
	ctx := context.Background()
	dir := t.TempDir()
	a, err := CreateScratchDisk(ctx, filepath.Join(dir, "a"), MinScratchBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := CreateScratchDisk(ctx, filepath.Join(dir, "b"), 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	img := testImage(t, v1.Config{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{scratchScript}, Env: []string{"PATH=/bin"}, User: "app"})
	sb, stdout, stderr, console := startSandbox(t, ctx, e, img, func(c *Config) {
		c.Scratch = []ScratchDisk{{File: a, Target: "/scratch/a", Size: MinScratchBytes}, {File: b, Target: "/scratch/b", Size: 64 << 20}}
	})
	if err := sb.StartWorkload(ctx, nil, nil); err != nil {
		t.Fatalf("StartWorkload: %v\nconsole:\n%s", err, console.String())
	}
	code, err := sb.Wait(ctx)
	if err != nil || code != 0 {
		t.Fatalf("exit %d, %v\nstdout:\n%s\nstderr:\n%s\nconsole:\n%s", code, err, stdout.String(), stderr.String(), console.String())
	}
	want := "read written-in-the-guest as 1000\ntwo\n" +
		"mount /scratch/a ext4 rw,nosuid,nodev\nmount /scratch/b ext4 rw,nosuid,nodev\n" +
		"drwxrwxrwt\nfill-refused\n"
	if got := stdout.String(); got != want {
		t.Errorf("stdout:\n%s\nwant:\n%s\nstderr:\n%s", got, want, stderr.String())
	}
	sb.Close()
	for _, f := range []*os.File{a, b} {
		if st, err := f.Stat(); err != nil || (f == a && st.Size() != MinScratchBytes) {
			t.Errorf("%s: %v %v: the file grew", f.Name(), st.Size(), err)
		}
	}
	if debugfs, err := exec.LookPath("debugfs"); err == nil {
		out, err := exec.Command(debugfs, "-R", "cat /f", filepath.Join(dir, "a")).Output()
		if err != nil || string(out) != "written-in-the-guest\n" {
			t.Errorf("debugfs cat /f on the host's file: %q, %v", out, err)
		}
	}
}

// TestCloneScratchDisk: a clone has scratch disks too, in its template's
// scratch slots (which its guest probed before the snapshot, at the
// slot's size): the workload writes and reads back, and the filesystem is
// the clone's disk's size.
func TestCloneScratchDisk(t *testing.T) {
	needMkfsExt4(t)
	tdir, e := sharedTemplate(t)
	tpl, err := LoadTemplate(tdir)
	if err != nil {
		t.Fatal(err)
	}
	defer tpl.Close()
	ctx := context.Background()
	f, err := CreateScratchDisk(ctx, filepath.Join(t.TempDir(), "s"), 32<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img := testImage(t, v1.Config{
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{"echo in-a-clone > /data/f && cat /data/f && /bin/busybox df -k /data"},
		Env:        []string{"PATH=/bin"},
	})
	disk := buildDisk(t, img)
	cfg := templateConfig(t, e)
	cfg.Template, cfg.Image, cfg.Name = tpl, disk.File, "scratch-clone"
	cfg.Scratch = []ScratchDisk{{File: f, Target: "/data", Size: 32 << 20}}
	var stdout, console syncBuffer
	cfg.Stdout, cfg.Console = &stdout, &console
	sb, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if err := sb.StartWorkload(ctx, nil, nil); err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, console.String())
	}
	code, err := sb.Wait(ctx)
	if err != nil || code != 0 || !strings.HasPrefix(stdout.String(), "in-a-clone\n") {
		t.Fatalf("exit %d, %v, stdout %q\nconsole:\n%s", code, err, stdout.String(), console.String())
	}
	// df: the filesystem's size, not the slot's (1 TiB).
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	df := strings.Fields(lines[len(lines)-1])
	if kib, err := strconv.Atoi(df[min(1, len(df)-1)]); err != nil || kib < 20<<10 || kib > 32<<10 {
		t.Errorf("df: %q, want a filesystem of about 32 MiB", stdout.String())
	}
}
