package hostd

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/tpm"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRunOptionsRefusesBadFields(t *testing.T) {
	good := func() *bulwarkv1.RunRequest {
		return &bulwarkv1.RunRequest{Policy: "demo", Image: "/srv/image"}
	}
	if _, err := runOptions(good()); err != nil {
		t.Fatalf("a good request is refused: %v", err)
	}
	for _, tc := range []struct {
		field string
		edit  func(*bulwarkv1.RunRequest)
	}{
		{"policy", func(r *bulwarkv1.RunRequest) { r.Policy = "" }},
		{"policy", func(r *bulwarkv1.RunRequest) { r.Policy = "../x" }},
		{"image", func(r *bulwarkv1.RunRequest) { r.Image = "" }},
		{"image", func(r *bulwarkv1.RunRequest) { r.Image = "relative/dir" }},
		{"image", func(r *bulwarkv1.RunRequest) { r.Image = "/a\x00b" }},
		{"kernel", func(r *bulwarkv1.RunRequest) { r.Kernel = "vmlinux" }},
		{"initrd", func(r *bulwarkv1.RunRequest) { r.Initrd = "/" + strings.Repeat("a", maxPath) }},
		{"args", func(r *bulwarkv1.RunRequest) { r.Args = []string{"a\x00"} }},
		{"args", func(r *bulwarkv1.RunRequest) { r.Args = make([]string, maxArgs+1) }},
		{"args", func(r *bulwarkv1.RunRequest) { r.Args = []string{strings.Repeat("a", maxArgsBytes+1)} }},
		{"cmdline", func(r *bulwarkv1.RunRequest) { r.Cmdline = "console=ttyS0\n" }},
		{"signers", func(r *bulwarkv1.RunRequest) { r.Signers = [][]byte{[]byte("not a key")} }},
		{"signers", func(r *bulwarkv1.RunRequest) { r.Signers = make([][]byte, maxSigners+1) }},
		{"accel", func(r *bulwarkv1.RunRequest) { r.Accel = "hvf" }},
		{"cpus", func(r *bulwarkv1.RunRequest) { r.Cpus = 10000 }},
		{"memory_mib", func(r *bulwarkv1.RunRequest) { r.MemoryMib = 1 }},
		{"template", func(r *bulwarkv1.RunRequest) { r.Template = "../t" }},
		{"boot_timeout_seconds", func(r *bulwarkv1.RunRequest) { r.BootTimeoutSeconds = maxBootTimout + 1 }},
		{"stop_timeout_seconds", func(r *bulwarkv1.RunRequest) { r.StopTimeoutSeconds = 1 << 20 }},
		{"netns", func(r *bulwarkv1.RunRequest) { r.Network = "tap" }},
		{"netns", func(r *bulwarkv1.RunRequest) { r.Network, r.Netns = "tap", "/tmp/netns" }},
		{"netns", func(r *bulwarkv1.RunRequest) { r.Network, r.Netns = "tap", "/run/netns/../netns/x" }},
		{"netns", func(r *bulwarkv1.RunRequest) { r.Network, r.Netns = "tap", "/run/netns/bulwark-none-such" }},
		{"netns", func(r *bulwarkv1.RunRequest) { r.Network, r.Netns = "tap", fmt.Sprintf("/proc/%d/ns/net", os.Getpid()) }},
		{"netns", func(r *bulwarkv1.RunRequest) { r.Network, r.Netns = "tap", fmt.Sprintf("/proc/%d/ns/mnt", os.Getpid()) }},
		{"netns", func(r *bulwarkv1.RunRequest) { r.Network, r.Netns = "user", "/run/netns/x" }},
		{"netns", func(r *bulwarkv1.RunRequest) { r.Netns = "/run/netns/x" }},
		{"container", func(r *bulwarkv1.RunRequest) { r.Container = "c1" }},
		{"container", func(r *bulwarkv1.RunRequest) { r.Pod = true }},
		{"container", func(r *bulwarkv1.RunRequest) { r.Pod, r.Container = true, "../c" }},
		{"container", func(r *bulwarkv1.RunRequest) { r.Pod, r.Container = true, strings.Repeat("c", 129) }},
	} {
		req := good()
		tc.edit(req)
		_, err := runOptions(req)
		if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tc.field+":") {
			t.Errorf("%s: err = %v, want InvalidArgument naming the field", tc.field, err)
		}
	}
}

// A service that stopped while sandboxes ran reports them lost at its
// next start, and keeps ended ones as they were.
func TestNewReportsRunningSandboxesLost(t *testing.T) {
	state := t.TempDir()
	root := SandboxesDir(state)
	ids := map[string]string{
		"0123456789abcdef0123456789abcdef": StatusRunning,
		"1123456789abcdef0123456789abcdef": StatusCreated,
		"2123456789abcdef0123456789abcdef": StatusExited,
	}
	for id, st := range ids {
		dir := filepath.Join(root, id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := writeRecord(dir, &bulwarkv1.Sandbox{Id: id, Status: st, ExitCode: 3}); err != nil {
			t.Fatal(err)
		}
	}
	// A record that lies about its id, and junk, are ignored.
	bad := filepath.Join(root, "3123456789abcdef0123456789abcdef")
	os.MkdirAll(bad, 0o700)
	writeRecord(bad, &bulwarkv1.Sandbox{Id: "0123456789abcdef0123456789abcdef", Status: StatusRunning})
	os.MkdirAll(filepath.Join(root, "not-a-sandbox"), 0o700)

	s, err := New(Config{StateDir: state, TPM: simTPM(t)})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.ListSandboxes(context.Background(), &bulwarkv1.ListSandboxesRequest{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetSandboxes()) != 3 {
		t.Fatalf("%d sandboxes, want 3: %v", len(resp.GetSandboxes()), resp.GetSandboxes())
	}
	for _, sb := range resp.GetSandboxes() {
		want := StatusLost
		if ids[sb.GetId()] == StatusExited {
			want = StatusExited
		}
		if sb.GetStatus() != want {
			t.Errorf("%s: status %s, want %s", sb.GetId(), sb.GetStatus(), want)
		}
		// Saved so: a third start reads the same.
		again, err := readSandboxRecord(filepath.Join(root, sb.GetId()))
		if err != nil || again.GetStatus() != want {
			t.Errorf("%s on disk: %v, %v", sb.GetId(), again.GetStatus(), err)
		}
	}
	// Nothing runs: the default list is empty.
	if resp, _ := s.ListSandboxes(context.Background(), &bulwarkv1.ListSandboxesRequest{}); len(resp.GetSandboxes()) != 0 {
		t.Errorf("ps without -a lists %d sandboxes", len(resp.GetSandboxes()))
	}
}

func TestFindByPrefix(t *testing.T) {
	s, err := New(Config{StateDir: t.TempDir(), TPM: simTPM(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"aaaa1111000000000000000000000000", "aaaa2222000000000000000000000000"} {
		done := make(chan struct{})
		close(done)
		s.sandboxes[id] = &sandbox{info: &bulwarkv1.Sandbox{Id: id}, done: done}
	}
	for _, tc := range []struct {
		id   string
		code codes.Code
	}{
		{"aaaa1", codes.OK}, {"aaaa2222000000000000000000000000", codes.OK},
		{"aaaa", codes.InvalidArgument}, {"b", codes.NotFound}, {"", codes.InvalidArgument},
		{"XYZ", codes.InvalidArgument}, {strings.Repeat("a", 33), codes.InvalidArgument},
	} {
		_, err := s.find(tc.id)
		if status.Code(err) != tc.code {
			t.Errorf("find(%q): %v, want %v", tc.id, err, tc.code)
		}
	}
}

// simTPM is the in-process simulator (one at a time), closed when the
// test ends: these services only hold it.
func simTPM(t *testing.T) *tpm.TPM {
	tp, err := tpm.Open(context.Background(), "sim")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

// A launch cut short by the service's end has no QEMU pid in its record
// (it is written once the workload runs), and a daemon sandbox's QEMU
// outlives the daemon: the next start finds it by the sandbox's name on
// its command line and kills it.
func TestLostLaunchLeavesNoProcess(t *testing.T) {
	state := t.TempDir()
	id := "4123456789abcdef0123456789abcdef"
	dir := filepath.Join(SandboxesDir(state), id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeRecord(dir, &bulwarkv1.Sandbox{Id: id, Status: StatusCreated}); err != nil {
		t.Fatal(err)
	}
	// A stand-in for its QEMU: a process named as QEMU's -name is.
	leftover := exec.Command("sh", "-c", "sleep 600", "bulwark-"+id)
	if err := leftover.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- leftover.Wait() }()
	t.Cleanup(func() { leftover.Process.Kill() })
	if _, err := New(Config{StateDir: state, TPM: simTPM(t)}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err == nil {
			t.Fatal("the leftover exited on its own")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the leftover process of a lost launch still runs")
	}
	r, err := readSandboxRecord(dir)
	if err != nil || r.GetStatus() != StatusLost {
		t.Fatalf("record: %v, %v", r.GetStatus(), err)
	}
}
