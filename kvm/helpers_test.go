package kvm

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// testEnv is what boot tests share: a built agent, the host kernel as
// vmlinux, the base initramfs. Built once per test binary.
type testEnv struct {
	agentPath string
	vmlinux   string
	base      []byte
	basePath  string
}

var (
	envOnce sync.Once
	env     *testEnv
	envErr  error
	envSkip string
	envDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if envDir != "" {
		os.RemoveAll(envDir)
	}
	os.Exit(code)
}

// bootEnv returns the shared boot environment, skipping the test when QEMU
// or the host kernel is missing, or under -short.
func bootEnv(t testing.TB) *testEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM; skipped with -short")
	}
	envOnce.Do(func() {
		if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
			envSkip = "qemu-system-x86_64 not installed: apt-get install qemu-system-x86"
			return
		}
		if _, err := exec.LookPath("busybox"); err != nil {
			envSkip = "busybox not installed: apt-get install busybox-static"
			return
		}
		hk, err := FindHostKernel()
		if err != nil {
			envSkip = err.Error()
			return
		}
		envDir, envErr = os.MkdirTemp("", "bulwark-kvm-test-")
		if envErr != nil {
			return
		}
		e := &testEnv{agentPath: filepath.Join(envDir, "bulwark-agent")}
		cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", e.agentPath, "github.com/bulwark-project/bulwark/cmd/bulwark-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local")
		if out, err := cmd.CombinedOutput(); err != nil {
			envErr = &buildError{out: string(out), err: err}
			return
		}
		if os.Getenv("BULWARK_STATE") == "" {
			// The extracted kernel goes to a temporary state directory,
			// removed by TestMain (set BULWARK_STATE to keep it across runs).
			os.Setenv("BULWARK_STATE", filepath.Join(envDir, "state"))
		}
		if e.vmlinux, envErr = CachedVmlinux(context.Background(), hk.BzImage, hk.Version); envErr != nil {
			return
		}
		agent, err := os.ReadFile(e.agentPath)
		if err != nil {
			envErr = err
			return
		}
		if e.base, envErr = BuildBaseInitramfs(BaseOptions{Agent: agent, KernelVersion: hk.Version}); envErr != nil {
			return
		}
		e.basePath = filepath.Join(envDir, "base.cpio")
		envErr = os.WriteFile(e.basePath, e.base, 0o644)
		env = e
	})
	if envSkip != "" {
		t.Skip(envSkip)
	}
	if envErr != nil {
		t.Fatal(envErr)
	}
	return env
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return "building the agent: " + e.err.Error() + "\n" + e.out }

type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	uid, gid   int
	body       []byte
}

func tarLayer(t testing.TB, ents []tarEntry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			Size: int64(len(e.body)), ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write(e.body)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testImage is a two-layer busybox image. Layer 2 deletes /etc/gone (a
// whiteout) and replaces /opq's contents (an opaque directory).
func testImage(t testing.TB, cfg v1.Config) v1.Image {
	t.Helper()
	bb, err := os.ReadFile(mustLookPath(t, "busybox"))
	if err != nil {
		t.Fatal(err)
	}
	dir := func(n string) tarEntry { return tarEntry{name: n, typ: tar.TypeDir, mode: 0o755} }
	file := func(n, body string) tarEntry {
		return tarEntry{name: n, typ: tar.TypeReg, mode: 0o644, body: []byte(body)}
	}
	link := func(n string) tarEntry {
		return tarEntry{name: "bin/" + n, typ: tar.TypeSymlink, link: "busybox", mode: 0o777}
	}
	l1 := []tarEntry{
		dir("bin"), dir("etc"), dir("opq"), dir("links"), dir("home"),
		{name: "home/app", typ: tar.TypeDir, mode: 0o755, uid: 1000, gid: 1000},
		{name: "bin/busybox", typ: tar.TypeReg, mode: 0o755, body: bb},
		file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"),
		file("etc/group", "root:x:0:\napp:x:1000:\n"),
		file("etc/gone", "deleted by layer 2\n"),
		file("opq/old", "hidden by layer 2\n"),
		file("links/a", "hard-linked\n"),
		{name: "links/b", typ: tar.TypeLink, link: "links/a"},
	}
	for _, n := range []string{"sh", "echo", "cat", "ls", "id", "pwd", "test", "[", "true", "sleep", "hostname", "grep"} {
		l1 = append(l1, link(n))
	}
	l2 := []tarEntry{
		dir("etc"), file("etc/.wh.gone", ""),
		dir("opq"), file("opq/.wh..wh..opq", ""), file("opq/new", "from layer 2\n"),
	}
	img, err := mutate.AppendLayers(empty.Image, tarLayer(t, l1), tarLayer(t, l2))
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func mustLookPath(t testing.TB, name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed: apt-get install busybox-static", name)
	}
	return p
}

// processGone reports whether pid has exited (and been reaped).
func processGone(pid int) bool {
	_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	return os.IsNotExist(err)
}

// buildDisk builds img's disk, closed when the test ends.
func buildDisk(t testing.TB, img v1.Image) *ImageDisk {
	t.Helper()
	if _, err := exec.LookPath("mkfs.erofs"); err != nil {
		t.Skip("mkfs.erofs not installed: apt-get install erofs-utils (make deps)")
	}
	d, err := BuildImageDisk(context.Background(), img, ImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}
