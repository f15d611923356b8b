package cpio

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func sample(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.WriteHeader(&Header{Name: "bin", Mode: TypeDir | 0o755}))
	must(w.WriteFile(Header{Name: "bin/hello", Mode: TypeReg | 0o755, MTime: 1}, []byte("#!/bin/sh\necho hi\n")))
	must(w.WriteFile(Header{Name: "bin/sh", Mode: TypeSymlink | 0o777}, []byte("hello")))
	must(w.WriteFile(Header{Name: "bin/odd", Mode: TypeReg | 0o4711, UID: 1000, GID: 100}, []byte("abc")))
	must(w.WriteFile(Header{Name: "bin/link1", Mode: TypeReg | 0o644, Ino: 7, NLink: 2}, []byte("shared")))
	must(w.WriteFile(Header{Name: "bin/link2", Mode: TypeReg | 0o644, Ino: 7, NLink: 2}, nil))
	must(w.WriteHeader(&Header{Name: "dev/console", Mode: TypeChar | 0o600, RDevMajor: 5, RDevMinor: 1}))
	must(w.Close())
	return buf.Bytes()
}

// TestSystemCpioReads checks our archive with GNU cpio, an independent reader.
func TestSystemCpioReads(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed: apt-get install cpio")
	}
	arch := sample(t)
	cmd := exec.Command("cpio", "-t", "-v", "--quiet", "--numeric-uid-gid")
	cmd.Stdin = bytes.NewReader(arch)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	got := string(out)
	for _, want := range []string{"drwxr-xr-x", "bin/hello", "bin/sh -> hello", "-rws--x--x", "1000     100", "bin/link2", "dev/console", "crw-------"} {
		if !strings.Contains(got, want) {
			t.Errorf("cpio -tv output lacks %q:\n%s", want, got)
		}
	}
	// Extract as a non-privileged layout and compare a file's bytes.
	dir := t.TempDir()
	cmd = exec.Command("cpio", "-i", "-d", "--quiet", "--no-absolute-filenames", "bin/hello", "bin/sh")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "bin/hello"))
	if err != nil || string(b) != "#!/bin/sh\necho hi\n" {
		t.Fatalf("extracted bin/hello = %q, %v", b, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || l != "hello" {
		t.Fatalf("bin/sh -> %q, %v", l, err)
	}
}

func TestDeterministic(t *testing.T) {
	if !bytes.Equal(sample(t), sample(t)) {
		t.Fatal("same entries gave different archives")
	}
}

func TestLayout(t *testing.T) {
	arch := sample(t)
	if len(arch)%4 != 0 {
		t.Errorf("archive length %d is not 4-aligned", len(arch))
	}
	if !bytes.HasPrefix(arch, []byte("070701")) {
		t.Errorf("bad magic %q", arch[:6])
	}
	if !bytes.Contains(arch, []byte("TRAILER!!!\x00")) {
		t.Error("no trailer")
	}
}

func TestWriterErrors(t *testing.T) {
	w := NewWriter(&bytes.Buffer{})
	if err := w.WriteHeader(&Header{Name: "", Mode: TypeReg}); err == nil {
		t.Error("empty name accepted")
	}
	if err := w.WriteHeader(&Header{Name: "TRAILER!!!", Mode: TypeReg}); err == nil {
		t.Error("trailer name accepted")
	}
	if err := w.WriteHeader(&Header{Name: "a", Mode: 0o644}); err == nil {
		t.Error("mode without type accepted")
	}
	if err := w.WriteHeader(&Header{Name: "a", Mode: TypeReg, Size: 1 << 33}); err == nil {
		t.Error("oversized accepted")
	}
	if err := w.WriteHeader(&Header{Name: "a", Mode: TypeReg, Size: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("abc")); !errors.Is(err, ErrWriteTooLong) {
		t.Errorf("long write: %v", err)
	}
	if err := w.Close(); err == nil {
		t.Error("close with a short entry accepted")
	}
}
