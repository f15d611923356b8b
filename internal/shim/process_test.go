package shim

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/ociimage"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	ptypes "github.com/containerd/containerd/protobuf/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

const (
	testPasswd = "root:x:0:0:root:/root:/bin/sh\n# comment\n\napp:x:1000:1001:app:/home/app:/bin/sh\nshort:x:7\n"
	testGroup  = "root:x:0:\nstaff:x:50:app\n"
)

// staticFiles serves fixed passwd and group files and counts the reads.
func staticFiles(passwd, group string, reads *int) userFiles {
	return func() ([]byte, []byte, error) {
		*reads++
		return []byte(passwd), []byte(group), nil
	}
}

// What a spec sets over its image's config, as containerd (ctr, the CRI)
// builds specs: the image's own environment, working directory and user
// are no override; what differs is, and reaches the launch as -e, -w, -u
// would; the CRI's HOSTNAME and containerd's default PATH are not
// variables the pod sets.
func TestProcessOverrides(t *testing.T) {
	podHost := func(v string) bool { return v == "duo" }
	for _, tc := range []struct {
		name      string
		proc      *specs.Process
		img       ocispec.ImageConfig
		want      overrides
		wantErr   string
		wantReads int
	}{
		{name: "no process", proc: nil},
		{name: "the image's own", proc: &specs.Process{Env: []string{"A=1", "PATH=/bin"}, Cwd: "/srv"},
			img: ocispec.ImageConfig{Env: []string{"PATH=/bin", "A=1"}, WorkingDir: "/srv"}},
		{name: "defaults of an image without env, workdir, user", proc: &specs.Process{Env: []string{"PATH=" + defaultPath}, Cwd: "/"}},
		{name: "a pod variable and another value", proc: &specs.Process{Env: []string{"PATH=/bin", "A=2", "FOO=bar", "HOSTNAME=duo"}, Cwd: "/"},
			img:  ocispec.ImageConfig{Env: []string{"PATH=/bin", "A=1"}},
			want: overrides{Env: []string{"A=2", "FOO=bar"}}},
		{name: "default PATH over the image's own PATH", proc: &specs.Process{Env: []string{"PATH=" + defaultPath}},
			img: ocispec.ImageConfig{Env: []string{"PATH=/bin"}}, want: overrides{Env: []string{"PATH=" + defaultPath}}},
		{name: "HOSTNAME other than the pod's is a variable", proc: &specs.Process{Env: []string{"HOSTNAME=other"}},
			want: overrides{Env: []string{"HOSTNAME=other"}}},
		{name: "a variable twice: the last counts", proc: &specs.Process{Env: []string{"X=1", "Y=2", "X=3"}},
			want: overrides{Env: []string{"X=3", "Y=2"}}},
		{name: "an empty value", proc: &specs.Process{Env: []string{"E="}}, want: overrides{Env: []string{"E="}}},
		{name: "a working directory", proc: &specs.Process{Cwd: "/work/"}, img: ocispec.ImageConfig{WorkingDir: "/srv"},
			want: overrides{WorkingDir: "/work"}},
		{name: "root's working directory over the image's", proc: &specs.Process{Cwd: "/"}, img: ocispec.ImageConfig{WorkingDir: "/srv"},
			want: overrides{WorkingDir: "/"}},
		{name: "a uid over an image without user", proc: &specs.Process{User: specs.User{UID: 1000, GID: 1000}},
			want: overrides{User: "1000:1000"}},
		{name: "root over an image's numeric user", proc: &specs.Process{User: specs.User{UID: 0, GID: 0}}, img: ocispec.ImageConfig{User: "5:6"},
			want: overrides{User: "0:0"}},
		{name: "the image's numeric user and group", proc: &specs.Process{User: specs.User{UID: 5, GID: 6}}, img: ocispec.ImageConfig{User: "5:6"}},
		{name: "the image's user name", proc: &specs.Process{User: specs.User{UID: 1000, GID: 1001}}, img: ocispec.ImageConfig{User: "app"}, wantReads: 1},
		{name: "the image's user name, another group", proc: &specs.Process{User: specs.User{UID: 1000, GID: 50}}, img: ocispec.ImageConfig{User: "app"},
			want: overrides{User: "1000:50"}, wantReads: 1},
		{name: "the image's user and group names", proc: &specs.Process{User: specs.User{UID: 1000, GID: 50}}, img: ocispec.ImageConfig{User: "app:staff"}, wantReads: 1},
		{name: "the image's lone uid takes passwd's gid", proc: &specs.Process{User: specs.User{UID: 1000, GID: 1001}}, img: ocispec.ImageConfig{User: "1000"}, wantReads: 1},
		{name: "a lone uid not in passwd has gid 0", proc: &specs.Process{User: specs.User{UID: 42}}, img: ocispec.ImageConfig{User: "42"}, wantReads: 1},
		{name: "a name and a numeric group", proc: &specs.Process{User: specs.User{UID: 1000, GID: 9}}, img: ocispec.ImageConfig{User: "app:9"}, wantReads: 1},
		{name: "an image user not in passwd: the spec's ids", proc: &specs.Process{User: specs.User{UID: 3, GID: 4}}, img: ocispec.ImageConfig{User: "ghost"},
			want: overrides{User: "3:4"}, wantReads: 1},
		{name: "a short passwd line is no entry", proc: &specs.Process{User: specs.User{UID: 7}}, img: ocispec.ImageConfig{User: "short"},
			want: overrides{User: "7:0"}, wantReads: 1},
		{name: "a group not in the image", proc: &specs.Process{User: specs.User{UID: 1000, GID: 1001}}, img: ocispec.ImageConfig{User: "app:nobody"},
			want: overrides{User: "1000:1001"}, wantReads: 1},

		{name: "an entry without =", proc: &specs.Process{Env: []string{"A=1", "NOVALUE"}}, wantErr: `process.env[1] "NOVALUE": want KEY=VALUE`},
		{name: "an empty key", proc: &specs.Process{Env: []string{"=x"}}, wantErr: "process.env[0]: empty variable name"},
		{name: "a key with a space", proc: &specs.Process{Env: []string{"A B=x"}}, wantErr: "process.env[0]: variable name"},
		{name: "a NUL in a value", proc: &specs.Process{Env: []string{"A=x\x00y"}}, wantErr: "process.env A:"},
		{name: "a huge value", proc: &specs.Process{Env: []string{"A=" + strings.Repeat("v", 9<<10)}}, wantErr: "process.env A: value of 9216 bytes"},
		{name: "too many variables", proc: &specs.Process{Env: manyVars(129)}, wantErr: "process.env: 129 variables over the image's, at most 128"},
		{name: "the image's variables do not count", proc: &specs.Process{Env: manyVars(200)}, img: ocispec.ImageConfig{Env: manyVars(100)},
			want: overrides{Env: manyVars(200)[100:]}},
		{name: "a relative working directory", proc: &specs.Process{Cwd: "work"}, wantErr: "process.cwd: \"work\" is not an absolute, clean path"},
		{name: "a uid beyond runc's", proc: &specs.Process{User: specs.User{UID: 1 << 31}}, wantErr: "process.user: uid 2147483648"},
		{name: "a terminal is refused by parseSpec, not here", proc: &specs.Process{Terminal: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reads := 0
			got, err := processOverrides(tc.proc, tc.img, podHost, staticFiles(testPasswd, testGroup, &reads))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errBadSpec) {
					t.Fatalf("processOverrides: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Env, tc.want.Env) || got.WorkingDir != tc.want.WorkingDir || got.User != tc.want.User {
				t.Errorf("processOverrides = %+v, want %+v", got, tc.want)
			}
			if reads != tc.wantReads {
				t.Errorf("read the image's user files %d times, want %d", reads, tc.wantReads)
			}
		})
	}
}

func manyVars(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "V" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + strings.Repeat("0", i/26) + "=1"
	}
	return out
}

// HOSTNAME is the CRI's (not carried) only for a CRI pod's container and
// only with the pod's hostname or, for a pod without one, the host's.
func TestCRIHostname(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no hostname:", err)
	}
	cri := &specs.Spec{Annotations: map[string]string{annotationCRIType: "container"}}
	for _, tc := range []struct {
		name    string
		spec    *specs.Spec
		podHost string
		value   string
		want    bool
	}{
		{"the pod's", cri, "duo", "duo", true},
		{"the host's, for a host-network pod", cri, "", host, true},
		{"another", cri, "duo", "other", false},
		{"empty", cri, "", "", false},
		{"ctr's container: its creator's", &specs.Spec{}, "duo", "duo", false},
		{"a pod's sandbox container", &specs.Spec{Annotations: map[string]string{annotationCRIType: "sandbox"}}, "duo", "duo", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := criHostname(tc.spec, tc.podHost)
			if got := f != nil && f(tc.value); got != tc.want {
				t.Errorf("criHostname(%q)(%q) = %v, want %v", tc.podHost, tc.value, got, tc.want)
			}
		})
	}
}

// The image's user files come from its layers as the guest's root is
// built from them: the upper layer's passwd wins, a whiteout removes the
// group file, and a symlink is no file.
func TestLayoutUserFiles(t *testing.T) {
	for _, tc := range []struct {
		name       string
		layers     []ociimage.Layer
		wantPasswd string
		wantGroup  string
	}{
		{name: "none", layers: []ociimage.Layer{{Entries: []ociimage.Entry{{Path: "hello", Mode: 0o644, Data: []byte("x")}}}}},
		{name: "upper layer wins, whiteout removes", layers: []ociimage.Layer{
			{Entries: []ociimage.Entry{{Path: "etc/passwd", Mode: 0o644, Data: []byte("old\n")}, {Path: "etc/group", Mode: 0o644, Data: []byte("g\n")}}},
			{Entries: []ociimage.Entry{{Path: "etc/passwd", Mode: 0o644, Data: []byte(testPasswd)}, {Path: "etc/group", Whiteout: true}}},
		}, wantPasswd: testPasswd},
		{name: "a symlink is no file", layers: []ociimage.Layer{
			{Entries: []ociimage.Entry{{Path: "etc/passwd", Mode: os.ModeSymlink | 0o777, Linkname: "/x"}, {Path: "etc/group", Mode: 0o644, Data: []byte(testGroup)}}},
		}, wantGroup: testGroup},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := ociimage.Build(ociimage.Spec{Layers: tc.layers, Entrypoint: []string{"/bin/sh"}})
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "layout")
			if _, err := ociimage.WriteLayout(dir, img, ""); err != nil {
				t.Fatal(err)
			}
			passwd, group, err := layoutUserFiles(dir)()
			if err != nil {
				t.Fatal(err)
			}
			if string(passwd) != tc.wantPasswd || string(group) != tc.wantGroup {
				t.Errorf("passwd %q group %q, want %q and %q", passwd, group, tc.wantPasswd, tc.wantGroup)
			}
		})
	}
	if _, _, err := layoutUserFiles(t.TempDir())(); err == nil {
		t.Error("an empty directory: user files read, want an error")
	}
}

// A terminal for a container's own process is refused, naming the
// field, before anything is copied or launched, where the process cannot
// have one (attach_test.go covers the pod VM container, which may). An
// exec'd process may have one: Exec takes its size from the spec's
// consoleSize (24x80 without one), and ResizePty before it starts sets
// its initial size; sizes out of bounds are refused, and so is a resize
// of a process without a terminal.
func TestTerminalRefused(t *testing.T) {
	s := &service{containers: map[string]*container{"c": {execs: map[string]*proc{}, task: &proc{id: "c"}}}, events: make(chan any, 8)}
	ctx := context.Background()
	bundle := writeBundle(t, &specs.Spec{Annotations: map[string]string{AnnotationPolicy: "app"}, Process: &specs.Process{Terminal: true, Args: []string{"/bin/sh"}}})
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "t", Bundle: bundle, Terminal: true}); !errdefs.IsNotImplemented(errdefs.FromGRPC(err)) ||
		!strings.Contains(err.Error(), "container t: terminal: a terminal for a container's own process (CRI tty: true, ctr run -t) is supported only in a pod VM") {
		t.Errorf("Create of a sandbox's own container with a terminal: %v", err)
	}
	spec := func(p specs.Process) *ptypes.Any {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		return &ptypes.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: b}
	}
	if _, err := s.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c", ExecID: "x", Terminal: true, Spec: spec(specs.Process{Args: []string{"sh"}})}); err != nil {
		t.Fatalf("Exec with a terminal: %v", err)
	}
	if got := s.containers["c"].execs["x"].size; got.GetRows() != 24 || got.GetCols() != 80 {
		t.Errorf("terminal size without consoleSize %v, want 24x80", got)
	}
	if _, err := s.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c", ExecID: "y", Terminal: true,
		Spec: spec(specs.Process{Args: []string{"sh"}, ConsoleSize: &specs.Box{Height: 33, Width: 101}})}); err != nil {
		t.Fatalf("Exec with a terminal: %v", err)
	}
	if got := s.containers["c"].execs["y"].size; got.GetRows() != 33 || got.GetCols() != 101 {
		t.Errorf("terminal size %v, want the consoleSize 33x101", got)
	}
	if _, err := s.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c", ExecID: "z", Terminal: true,
		Spec: spec(specs.Process{Args: []string{"sh"}, ConsoleSize: &specs.Box{Height: 0, Width: 80}})}); errdefs.FromGRPC(err) == nil ||
		!errdefs.IsInvalidArgument(errdefs.FromGRPC(err)) || !strings.Contains(err.Error(), "process.consoleSize: terminal size 0x80") {
		t.Errorf("Exec with a terminal of 0 rows: %v", err)
	}
	if _, err := s.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "c", ExecID: "x", Width: 132, Height: 50}); err != nil {
		t.Fatalf("ResizePty before start: %v", err)
	}
	if got := s.containers["c"].execs["x"].size; got.GetRows() != 50 || got.GetCols() != 132 {
		t.Errorf("terminal size after ResizePty %v, want 50x132", got)
	}
	if _, err := s.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "c", ExecID: "x", Width: 132, Height: 10001}); !errdefs.IsInvalidArgument(errdefs.FromGRPC(err)) {
		t.Errorf("ResizePty to 10001 rows: %v, want invalid argument", err)
	}
	if _, err := s.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "c", Width: 132, Height: 50}); !errdefs.IsNotImplemented(errdefs.FromGRPC(err)) {
		t.Errorf("ResizePty of a container's own process without a terminal: %v, want not implemented", err)
	}
	if _, err := s.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c", ExecID: "p", Spec: spec(specs.Process{Args: []string{"sh"}})}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "c", ExecID: "p", Width: 132, Height: 50}); !errdefs.IsNotImplemented(errdefs.FromGRPC(err)) {
		t.Errorf("ResizePty of an exec without a terminal: %v, want not implemented", err)
	}
	if _, err := s.CloseIO(ctx, &taskAPI.CloseIORequest{ID: "c", ExecID: "p", Stdin: true}); err != nil {
		t.Errorf("CloseIO of an exec not started: %v", err)
	}
}
