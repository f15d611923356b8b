package hostd

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestAddContainerOptionsRefusesBadFields(t *testing.T) {
	good := func() *bulwarkv1.AddContainerRequest {
		return &bulwarkv1.AddContainerRequest{Id: "abc", Name: "web-1", Image: "/srv/image", Args: []string{"sh"},
			Env: []string{"A=1"}, WorkingDir: "/srv", User: "1000:1000"}
	}
	co, err := addContainerOptions(good())
	if err != nil {
		t.Fatalf("a good request is refused: %v", err)
	}
	if co.Name != "web-1" || co.Image != "/srv/image" || co.WorkingDir != "/srv" || co.User != "1000:1000" || len(co.Env) != 1 {
		t.Fatalf("options = %+v", co)
	}
	for _, tc := range []struct {
		field string
		edit  func(*bulwarkv1.AddContainerRequest)
	}{
		{"name", func(r *bulwarkv1.AddContainerRequest) { r.Name = "" }},
		{"name", func(r *bulwarkv1.AddContainerRequest) { r.Name = ".." }},
		{"name", func(r *bulwarkv1.AddContainerRequest) { r.Name = "a/b" }},
		{"name", func(r *bulwarkv1.AddContainerRequest) { r.Name = strings.Repeat("n", 129) }},
		{"image", func(r *bulwarkv1.AddContainerRequest) { r.Image = "" }},
		{"image", func(r *bulwarkv1.AddContainerRequest) { r.Image = "relative" }},
		{"image", func(r *bulwarkv1.AddContainerRequest) { r.Image = "/a\x00" }},
		{"args", func(r *bulwarkv1.AddContainerRequest) { r.Args = []string{"a\x00"} }},
		{"args", func(r *bulwarkv1.AddContainerRequest) { r.Args = make([]string, 257) }},
		{"args", func(r *bulwarkv1.AddContainerRequest) { r.Args = []string{strings.Repeat("a", 64<<10+1)} }},
		{"env", func(r *bulwarkv1.AddContainerRequest) { r.Env = []string{"NOEQUALS"} }},
		{"env", func(r *bulwarkv1.AddContainerRequest) { r.Env = []string{"=x"} }},
		{"working_dir", func(r *bulwarkv1.AddContainerRequest) { r.WorkingDir = "relative" }},
		{"user", func(r *bulwarkv1.AddContainerRequest) { r.User = "a\x00" }},
	} {
		req := good()
		tc.edit(req)
		_, err := addContainerOptions(req)
		if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tc.field+":") {
			t.Errorf("%s: err = %v, want InvalidArgument naming the field", tc.field, err)
		}
	}
}

// The container RPCs refuse what names no pod's container before
// anything else: a bad name is InvalidArgument, an unknown sandbox
// NotFound, a bad signal InvalidArgument.
func TestContainerRPCsRefuse(t *testing.T) {
	s, err := New(Config{StateDir: t.TempDir(), TPM: simTPM(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background(), false) })
	ctx := context.Background()
	for _, tc := range []struct {
		what string
		call func() error
		code codes.Code
		msg  string
	}{
		{"inspect, bad name", func() error {
			_, err := s.InspectContainer(ctx, &bulwarkv1.ContainerRequest{Id: "ab", Name: "a/b"})
			return err
		}, codes.InvalidArgument, "name:"},
		{"inspect, no sandbox", func() error {
			_, err := s.InspectContainer(ctx, &bulwarkv1.ContainerRequest{Id: "ab", Name: "c"})
			return err
		}, codes.NotFound, ""},
		{"kill, bad signal", func() error {
			_, err := s.KillContainer(ctx, &bulwarkv1.KillContainerRequest{Id: "ab", Name: "c", Signal: 65})
			return err
		}, codes.InvalidArgument, "signal:"},
		{"add, bad image", func() error {
			_, err := s.AddContainer(ctx, &bulwarkv1.AddContainerRequest{Id: "ab", Name: "c", Image: "x"})
			return err
		}, codes.InvalidArgument, "image:"},
		{"remove, bad name", func() error {
			_, err := s.RemoveContainer(ctx, &bulwarkv1.ContainerRequest{Id: "ab", Name: ".."})
			return err
		}, codes.InvalidArgument, "name:"},
		{"remove, no sandbox", func() error {
			_, err := s.RemoveContainer(ctx, &bulwarkv1.ContainerRequest{Id: "ab", Name: "c"})
			return err
		}, codes.NotFound, ""},
		{"add, no sandbox", func() error {
			_, err := s.AddContainer(ctx, &bulwarkv1.AddContainerRequest{Id: "ab", Name: "c", Image: "/x"})
			return err
		}, codes.NotFound, ""},
	} {
		err := tc.call()
		if status.Code(err) != tc.code || !strings.HasPrefix(status.Convert(err).Message(), tc.msg) {
			t.Errorf("%s: %v, want %v %q", tc.what, err, tc.code, tc.msg)
		}
	}
}

// A pod VM that ran when the service stopped is lost at the next start,
// and so is each container it ran: every launch event of the pod (its
// own, and its added containers') gets an END record, so that attestd
// never judges one of them alive again.
func TestLostPodEndsItsContainers(t *testing.T) {
	ctx := context.Background()
	state := t.TempDir()
	tp := simTPM(t)
	podID, added, other := "5123456789abcdef0123456789abcdef", "6123456789abcdef0123456789abcdef", "7123456789abcdef0123456789abcdef"
	// starting: recorded, then the service stopped before it ran;
	// unrecorded: the service stopped before its event reached the log.
	starting, unrecorded := "8123456789abcdef0123456789abcdef", "9123456789abcdef0123456789abcdef"
	hl := launch.NewHostLog(filepath.Join(state, "launch"), limits.DefaultLaunchPCR)
	for _, id := range []string{podID, added, other, starting} {
		d := measure.DigestBytes(measure.SHA256, []byte(id))
		if _, err := hl.Append(ctx, tp, &measure.LaunchEvent{SandboxID: id, Policy: "p", Kernel: d, Cmdline: "console=ttyS0",
			CmdlineDigest: measure.DigestCmdline(measure.SHA256, "console=ttyS0"), GuestPublicKey: make([]byte, 32),
			Time: time.Unix(1700000000, 0).UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(SandboxesDir(state), podID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeRecord(dir, &bulwarkv1.Sandbox{Id: podID, Status: StatusRunning, Pod: true, Containers: []*bulwarkv1.Container{
		{Name: "first", Status: containerRunning, EventId: podID},
		{Name: "second", Status: containerRunning, EventId: added},
		{Name: "refused", Status: containerFailed},
		{Name: "starting", Status: containerCreated, EventId: starting},
		{Name: "unrecorded", Status: containerCreated, EventId: unrecorded},
	}}); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{StateDir: state, TPM: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(ctx, false) })
	data, err := os.ReadFile(hl.Path())
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := tp.ReadPCRs(ctx, limits.DefaultLaunchPCR)
	if err != nil {
		t.Fatal(err)
	}
	vl, err := measure.VerifyLog(data, limits.DefaultLaunchPCR, measure.SHA256, pcrs[limits.DefaultLaunchPCR])
	if err != nil {
		t.Fatalf("the launch log does not replay to the TPM's PCR: %v", err)
	}
	var got []string
	for _, r := range vl.Records() {
		if r.End != nil {
			got = append(got, r.End.SandboxID+":"+r.End.Reason)
		}
	}
	slices.Sort(got)
	if want := []string{podID + ":lost", added + ":lost", starting + ":lost"}; !slices.Equal(got, want) {
		t.Fatalf("END records %v, want %v (the sandbox %s never ran here, %s is not in the log: none)", got, want, other, unrecorded)
	}
	// Its containers are failed, saying why, and can be inspected (the
	// shim follows them until they no longer run).
	for name, want := range map[string]string{"first": "its pod VM was lost: ", "second": "its pod VM was lost: ", "refused": ""} {
		c, err := s.InspectContainer(ctx, &bulwarkv1.ContainerRequest{Id: podID, Name: name})
		if err != nil {
			t.Fatalf("inspect %s: %v", name, err)
		}
		if c.GetStatus() != containerFailed || !strings.HasPrefix(c.GetError(), want) {
			t.Errorf("container %s: %s %q, want failed %q...", name, c.GetStatus(), c.GetError(), want)
		}
	}
	// Removed, a container of the lost pod leaves its record and log.
	logPath := filepath.Join(dir, containersDir, "second.log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"second", "refused"} {
		if _, err := s.RemoveContainer(ctx, &bulwarkv1.ContainerRequest{Id: podID, Name: name}); err != nil {
			t.Fatalf("RemoveContainer %s: %v", name, err)
		}
		if _, err := s.InspectContainer(ctx, &bulwarkv1.ContainerRequest{Id: podID, Name: name}); status.Code(err) != codes.NotFound {
			t.Errorf("inspect %s after its removal: %v, want NotFound", name, err)
		}
		if _, err := s.RemoveContainer(ctx, &bulwarkv1.ContainerRequest{Id: podID, Name: name}); status.Code(err) != codes.NotFound {
			t.Errorf("RemoveContainer %s again: %v, want NotFound", name, err)
		}
	}
	if _, err := os.Stat(logPath); !os.IsNotExist(err) {
		t.Errorf("the removed container's log: %v, want gone", err)
	}
	r, err := readSandboxRecord(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range r.GetContainers() {
		if c.GetName() == "second" || c.GetName() == "refused" {
			t.Errorf("the saved record still lists removed container %s", c.GetName())
		}
	}
}
