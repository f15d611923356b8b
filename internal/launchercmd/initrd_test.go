package launchercmd

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/cli"
)

// staticELF is a minimal static x86-64 ELF header: enough for the builder.
func staticELF() []byte {
	b := make([]byte, 64)
	copy(b, elf.ELFMAG)
	b[4], b[5], b[6] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	b[16], b[18], b[20], b[52] = byte(elf.ET_EXEC), byte(elf.EM_X86_64), 1, 64
	return b
}

func TestInitrdBuild(t *testing.T) {
	dir := t.TempDir()
	mods := filepath.Join(dir, "modules", "1.2.3-test")
	ko := append([]byte("\x7fELF"), make([]byte, 64)...)
	for _, m := range []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_console", "virtio-rng", "virtio_blk", "crc32c_generic", "libcrc32c", "erofs", "overlay"} {
		p := filepath.Join(mods, "kernel", m+".ko")
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, ko, 0o644)
	}
	dep := "kernel/virtio_ring.ko:\nkernel/virtio.ko: kernel/virtio_ring.ko\nkernel/virtio_mmio.ko: kernel/virtio.ko kernel/virtio_ring.ko\n" +
		"kernel/virtio_console.ko: kernel/virtio.ko kernel/virtio_ring.ko\nkernel/virtio-rng.ko: kernel/virtio.ko kernel/virtio_ring.ko\n" +
		"kernel/virtio_blk.ko: kernel/virtio.ko kernel/virtio_ring.ko\nkernel/crc32c_generic.ko:\nkernel/libcrc32c.ko:\nkernel/erofs.ko: kernel/libcrc32c.ko\nkernel/overlay.ko:\n"
	os.WriteFile(filepath.Join(mods, "modules.dep"), []byte(dep), 0o644)
	agent := filepath.Join(dir, "agent")
	os.WriteFile(agent, staticELF(), 0o755)
	empty := filepath.Join(dir, "empty-agent")
	os.WriteFile(empty, nil, 0o755)

	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Program.Main(context.Background(), &cli.Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}, args)
		return code, out.String(), errb.String()
	}
	out1 := filepath.Join(dir, "a.cpio")
	code, stdout, stderr := run("initrd", "build", "--agent", agent, "--kernel-version", "1.2.3-test", "--modules-dir", filepath.Join(dir, "modules"), "-o", out1)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "sha256:") || !strings.Contains(stdout, "1.2.3-test") {
		t.Errorf("stdout = %q", stdout)
	}
	out2 := filepath.Join(dir, "b.cpio")
	if code, _, stderr := run("initrd", "build", "--agent", agent, "--kernel-version", "1.2.3-test", "--modules-dir", filepath.Join(dir, "modules"), "-o", out2); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	a, _ := os.ReadFile(out1)
	b, _ := os.ReadFile(out2)
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatal("two builds differ")
	}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"initrd", "build", "--agent", agent}, 2, "-o FILE"},
		{[]string{"initrd", "build", "--agent", agent, "--kernel-version", "nope", "--modules-dir", filepath.Join(dir, "modules"), "-o", out1}, 1, "modules.dep"},
		{[]string{"initrd", "build", "--agent", filepath.Join(dir, "missing"), "--kernel-version", "1.2.3-test", "-o", out1}, 1, "guest agent"},
		{[]string{"initrd", "build", "--agent", empty, "--kernel-version", "1.2.3-test", "--modules-dir", filepath.Join(dir, "modules"), "-o", out1}, 1,
			"guest agent: " + empty + " is empty (0 bytes)"},
		// The agent is read before the host kernel is looked for.
		{[]string{"initrd", "build", "--agent", empty, "--modules-dir", filepath.Join(dir, "nothing"), "-o", out1}, 1, empty + " is empty"},
	} {
		code, _, stderr := run(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.msg)
		}
	}
}
