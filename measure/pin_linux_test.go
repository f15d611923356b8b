package measure

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPinMatchesDigestFileAndIsSealed(t *testing.T) {
	data := randBytes(t, 1<<20+5)
	p := writeTemp(t, "vmlinux", data)
	pinned, err := Pin(context.Background(), p, SHA256)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pinned.Close() })
	want, _, err := DigestFile(context.Background(), p, SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if pinned.Digest != want || pinned.Size != int64(len(data)) {
		t.Fatalf("pinned %s/%d, file %s/%d", pinned.Digest, pinned.Size, want, len(data))
	}
	// Changing the source file afterwards does not change the pinned bytes.
	if err := os.WriteFile(p, []byte("evil"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(pinned.Path())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("pinned contents differ from what was measured")
	}
	assertSealed(t, pinned)
}

// assertSealed tries every way to change a pinned memfd's bytes.
func assertSealed(t *testing.T, p *Pinned) {
	t.Helper()
	seals, err := unix.FcntlInt(p.File.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if seals&(unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL) != unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL {
		t.Fatalf("seals %#x", seals)
	}
	fd := int(p.File.Fd())
	if _, err := unix.Pwrite(fd, []byte("x"), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("pwrite on the memfd: %v, want EPERM", err)
	}
	if _, err := unix.Pwrite(fd, []byte("x"), p.Size); !errors.Is(err, unix.EPERM) {
		t.Errorf("append to the memfd: %v, want EPERM", err)
	}
	// Reopening through /proc for writing gives a new description: still sealed.
	if w, err := os.OpenFile(p.Path(), os.O_WRONLY, 0); err == nil {
		_, werr := w.Write([]byte("x"))
		w.Close()
		if werr == nil {
			t.Error("write through a reopened /proc/self/fd path succeeded")
		}
	}
	if err := unix.Ftruncate(fd, 0); p.Size > 0 && !errors.Is(err, unix.EPERM) {
		t.Errorf("shrink: %v, want EPERM", err)
	}
	if err := unix.Ftruncate(fd, p.Size+4096); !errors.Is(err, unix.EPERM) {
		t.Errorf("grow: %v, want EPERM", err)
	}
	if p.Size > 0 {
		if _, err := unix.Mmap(fd, 0, int(p.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); !errors.Is(err, unix.EPERM) {
			t.Errorf("writable shared mmap: %v, want EPERM", err)
		}
	}
	if _, err := unix.FcntlInt(p.File.Fd(), unix.F_ADD_SEALS, 0); err == nil {
		// Adding no seals is allowed only when F_SEAL_SEAL is absent.
		t.Error("seals can still be changed")
	}
}

func TestPinBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		alg  Alg
	}{
		{"initramfs", randBytes(t, 300000), SHA256},
		{"empty", nil, SHA384},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PinBytes(tc.name, tc.data, tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			if p.Digest != DigestBytes(tc.alg, tc.data) {
				t.Fatalf("digest %s", p.Digest)
			}
			got, _ := io.ReadAll(p.File)
			if !bytes.Equal(got, tc.data) {
				t.Fatal("contents differ")
			}
			assertSealed(t, p)
		})
	}
}

// TestPinnedInheritedByChild hands the memfd to a child exactly as the
// launcher hands it to QEMU and has an independent tool hash it there.
func TestPinnedInheritedByChild(t *testing.T) {
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Skip("sha256sum not found: apt-get install coreutils")
	}
	a, err := PinBytes("a", []byte("first"), SHA256)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := PinBytes("b", randBytes(t, 70000), SHA256)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	cmd := exec.Command("sha256sum", a.ChildPath(0), b.ChildPath(1))
	cmd.ExtraFiles = []*os.File{a.File, b.File}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, p := range []*Pinned{a, b} {
		if got := "sha256:" + strings.Fields(lines[i])[0]; got != p.Digest {
			t.Fatalf("child sees %s for %s, pinned %s", got, p.ChildPath(i), p.Digest)
		}
	}
}

func TestPinErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, path, want string }{
		{"missing", dir + "/nope", "no such file"},
		{"directory", dir, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Pin(context.Background(), tc.path, SHA256); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}
