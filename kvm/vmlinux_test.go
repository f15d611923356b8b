package kvm

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// hostKernelBytes returns the host's bzImage, skipping when there is none.
func hostKernelBytes(t testing.TB) (HostKernel, []byte) {
	t.Helper()
	hk, err := FindHostKernel()
	if err != nil {
		t.Skipf("no host kernel: %v (apt-get install linux-image-amd64)", err)
	}
	b, err := os.ReadFile(hk.BzImage)
	if err != nil {
		t.Skipf("host kernel %s not readable: %v", hk.BzImage, err)
	}
	return hk, b
}

func TestExtractVmlinuxHostKernel(t *testing.T) {
	_, bz := hostKernelBytes(t)
	start := time.Now()
	out, err := ExtractVmlinux(bz)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("extracted %d bytes from %d in %v", len(out), len(bz), time.Since(start))
	f, err := elf.NewFile(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != elf.ET_EXEC || f.Machine != elf.EM_X86_64 {
		t.Fatalf("ELF type %v machine %v", f.Type, f.Machine)
	}
	if err := CheckPVH(out); err != nil {
		t.Fatal(err)
	}
	// An already-extracted vmlinux passes through unchanged.
	again, err := ExtractVmlinux(out)
	if err != nil || !bytes.Equal(again, out) {
		t.Fatalf("vmlinux input: %v", err)
	}

	// The same ELF wrapped in zstd and gzip (other distributions' kernels).
	var zb, gb bytes.Buffer
	zw, _ := zstd.NewWriter(&zb, zstd.WithEncoderLevel(zstd.SpeedFastest))
	zw.Write(out)
	zw.Close()
	gw, _ := gzip.NewWriterLevel(&gb, gzip.BestSpeed)
	gw.Write(out)
	gw.Close()
	for name, wrapped := range map[string][]byte{"zstd": zb.Bytes(), "gzip": gb.Bytes()} {
		// A fake setup area in front, like a bzImage without a usable header.
		img := append(bytes.Repeat([]byte{0x90}, 4096), wrapped...)
		img = append(img, 1, 2, 3, 4) // the size trailer the kernel appends
		got, err := ExtractVmlinux(img)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, out) {
			t.Fatalf("%s: different bytes", name)
		}
	}
}

func TestExtractVmlinuxErrors(t *testing.T) {
	for name, in := range map[string][]byte{
		"empty":       nil,
		"garbage":     bytes.Repeat([]byte("kernel"), 1000),
		"bad xz":      append([]byte{0xfd, '7', 'z', 'X', 'Z', 0}, bytes.Repeat([]byte{1}, 100)...),
		"bad gzip":    append([]byte{0x1f, 0x8b, 0x08}, bytes.Repeat([]byte{1}, 100)...),
		"elf no note": minimalELF(),
	} {
		if _, err := ExtractVmlinux(in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := CheckPVH(minimalELF()); !errors.Is(err, ErrNoPVHNote) {
		t.Errorf("CheckPVH(no note) = %v", err)
	}
}

// minimalELF is a valid x86-64 ELF header with no program headers.
func minimalELF() []byte {
	b := make([]byte, 64)
	copy(b, elf.ELFMAG)
	b[4], b[5], b[6] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	b[16] = byte(elf.ET_EXEC)
	b[18] = byte(elf.EM_X86_64)
	b[20] = 1
	b[52] = 64 // ehsize
	return b
}

func FuzzExtractVmlinux(f *testing.F) {
	f.Add([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 4})
	f.Add(minimalELF())
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := extractVmlinux(in, 8<<20) // a small bound keeps the fuzzer's memory in check
		if err == nil && CheckPVH(out) != nil {
			t.Fatal("returned a kernel without the PVH note")
		}
	})
}

func TestCachedVmlinux(t *testing.T) {
	if testing.Short() {
		t.Skip("decompresses the host kernel")
	}
	hk, _ := hostKernelBytes(t)
	t.Setenv("BULWARK_STATE", t.TempDir())
	p, err := CachedVmlinux(context.Background(), hk.BzImage, hk.Version)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(p) != filepath.Join(StateDir(), "kernels") {
		t.Fatalf("cached at %s", p)
	}
	st1, _ := os.Stat(p)
	p2, err := CachedVmlinux(context.Background(), hk.BzImage, hk.Version)
	if err != nil || p2 != p {
		t.Fatalf("second call: %s %v", p2, err)
	}
	st2, _ := os.Stat(p2)
	if !st1.ModTime().Equal(st2.ModTime()) {
		t.Error("cache was rewritten")
	}
	// A corrupted cache entry is replaced, not used.
	os.WriteFile(p, []byte("junk"), 0o644)
	p3, err := CachedVmlinux(context.Background(), hk.BzImage, hk.Version)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p3); CheckPVH(b) != nil {
		t.Fatal("corrupted cache was used")
	}
}

func TestVersionLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"6.1.0-56-amd64", "6.1.0-9-amd64", false},
		{"6.1.0-9-amd64", "6.1.0-56-amd64", true},
		{"5.10.0-1-amd64", "6.1.0-1-amd64", true},
		{"6.1.0-1-amd64", "6.1.0-1-amd64", false},
	} {
		if got := versionLess(tc.a, tc.b); got != tc.want {
			t.Errorf("versionLess(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

// TestDecompressXZAgainstXZUtils compresses x86 code with the system xz the
// way the kernel build does (x86 BCJ + LZMA2 + CRC32, also CRC64/SHA-256)
// and checks our decoder gives back the same bytes.
func TestDecompressXZAgainstXZUtils(t *testing.T) {
	xzBin, err := exec.LookPath("xz")
	if err != nil {
		t.Skip("xz not installed: apt-get install xz-utils")
	}
	code, err := os.ReadFile(xzBin) // some real x86-64 machine code
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--x86", "--lzma2=preset=6", "--check=crc32"},
		{"--lzma2=preset=1", "--check=crc64"},
		{"--x86", "--lzma2=preset=0", "--check=sha256", "--block-size=20000"},
	} {
		cmd := exec.Command(xzBin, append([]string{"-c", "-T1"}, args...)...)
		cmd.Stdin = bytes.NewReader(code)
		comp, err := cmd.Output()
		if err != nil {
			t.Fatalf("xz %v: %v", args, err)
		}
		got, err := decompressXZ(comp, 1<<30)
		if err != nil {
			t.Fatalf("xz %v: %v", args, err)
		}
		if !bytes.Equal(got, code) {
			t.Fatalf("xz %v: output differs", args)
		}
		// A flipped byte in the middle must be caught (checksum or LZMA error).
		bad := bytes.Clone(comp)
		bad[len(bad)/2] ^= 0x55
		if out, err := decompressXZ(bad, 1<<30); err == nil && bytes.Equal(out, code) {
			t.Fatalf("xz %v: corruption not detected", args)
		} else if err == nil {
			t.Fatalf("xz %v: corrupted stream decoded without error", args)
		}
	}
}
