package shim

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
)

// writeBundle writes spec as a bundle's config.json.
func writeBundle(t *testing.T, spec *specs.Spec) string {
	t.Helper()
	dir := t.TempDir()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Create takes a terminal for a container of a pod VM (the CRI's tty:
// true; before, every terminal was refused): it gets past the terminal
// to the image's export (which fails here: no containerd). A pod's
// sandbox container, which runs no process, and a container of a pod
// that is not a pod VM (a sandbox of its own) are refused, naming the
// terminal, before anything is copied.
func TestCreateTerminalInPodVM(t *testing.T) {
	t.Setenv(envContainerd, "")
	ctx := context.Background()
	pause := func(podVM string) *container {
		return &container{pause: true, podVM: podVM == "true", execs: map[string]*proc{}, task: &proc{id: "pod"}}
	}
	ctr := func(terminal bool) *specs.Spec {
		return &specs.Spec{Annotations: map[string]string{AnnotationPolicy: "app", annotationCRIType: "container", annotationSandboxID: "pod"},
			Process: &specs.Process{Terminal: terminal, Args: []string{"/bin/sh"}}}
	}
	for _, tc := range []struct {
		name     string
		pod      *container
		spec     *specs.Spec
		terminal bool
		want     string
		code     func(error) bool
	}{
		{"pod VM container, tty", pause("true"), ctr(true), true, "containerd's address is unknown", nil},
		{"pod VM container, tty in the spec alone", pause("true"), ctr(true), false, "containerd's address is unknown", nil},
		{"container of a pod of sandboxes", pause("false"), ctr(true), true, "is supported only in a pod VM", errdefs.IsNotImplemented},
		{"pause container", nil, &specs.Spec{Annotations: map[string]string{annotationCRIType: "sandbox"}, Process: &specs.Process{Terminal: true}}, true,
			"a pod's sandbox container runs no process", errdefs.IsInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &service{containers: map[string]*container{}, events: make(chan any, 8)}
			if tc.pod != nil {
				s.containers["pod"] = tc.pod
			}
			_, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c", Bundle: writeBundle(t, tc.spec), Terminal: tc.terminal})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Create: %v, want an error about %q", err, tc.want)
			}
			if strings.Contains(tc.want, "containerd") {
				return // the export's own error, past the terminal
			}
			if !tc.code(errdefs.FromGRPC(err)) {
				t.Errorf("Create: %v: wrong class", err)
			}
		})
	}
}

// A pod VM container's task on a terminal starts at its spec's
// consoleSize (24x80 without one; one out of bounds is refused);
// ResizePty before Start changes that size, State reports the terminal,
// and its process is started with stdin (a stdin fifo) and that size.
func TestTaskTerminal(t *testing.T) {
	spec := func(p *specs.Process) *specs.Spec { return &specs.Spec{Process: p} }
	req := &taskAPI.CreateTaskRequest{ID: "c", Terminal: true}
	tk := &proc{id: "c"}
	if err := taskTerminal(tk, req, spec(&specs.Process{})); err != nil || !tk.terminal || !proto.Equal(tk.size, &bulwarkv1.TerminalSize{Rows: 24, Cols: 80}) {
		t.Fatalf("without consoleSize: %v, terminal %v size %v", err, tk.terminal, tk.size)
	}
	tk = &proc{id: "c"}
	if err := taskTerminal(tk, req, spec(&specs.Process{ConsoleSize: &specs.Box{Height: 33, Width: 101}})); err != nil || tk.size.GetRows() != 33 || tk.size.GetCols() != 101 {
		t.Fatalf("with consoleSize 33x101: %v, size %v", err, tk.size)
	}
	if err := taskTerminal(&proc{id: "c"}, req, spec(&specs.Process{ConsoleSize: &specs.Box{Height: 0, Width: 80}})); !errdefs.IsInvalidArgument(errdefs.FromGRPC(err)) ||
		!strings.Contains(err.Error(), "process.consoleSize") {
		t.Errorf("consoleSize 0x80: %v", err)
	}
	none := &proc{id: "c"}
	if err := taskTerminal(none, &taskAPI.CreateTaskRequest{ID: "c"}, spec(nil)); err != nil || none.terminal {
		t.Errorf("no terminal asked for: %v, terminal %v", err, none.terminal)
	}

	tk.stdin = "/run/fifo/stdin"
	s := &service{containers: map[string]*container{"c": {execs: map[string]*proc{}, task: tk}}, events: make(chan any, 8)}
	ctx := context.Background()
	if _, err := s.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "c", Width: 132, Height: 50}); err != nil {
		t.Fatalf("ResizePty of the container's own terminal before Start: %v", err)
	}
	if _, err := s.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "c", Width: 132, Height: 0}); !errdefs.IsInvalidArgument(errdefs.FromGRPC(err)) {
		t.Errorf("ResizePty to 0 rows: %v, want invalid argument", err)
	}
	st, err := s.State(ctx, &taskAPI.StateRequest{ID: "c"})
	if err != nil || !st.Terminal {
		t.Errorf("State: %v, terminal %v", err, st.GetTerminal())
	}
	stdin, tty := taskStdio(tk)
	if !stdin || !proto.Equal(tty, &bulwarkv1.TerminalSize{Rows: 50, Cols: 132}) {
		t.Errorf("started with stdin %v, terminal %v; want stdin and 50x132", stdin, tty)
	}
	if stdin, tty := taskStdio(&proc{}); stdin || tty != nil {
		t.Errorf("a task without stdin fifo and terminal: stdin %v, terminal %v", stdin, tty)
	}
	if _, err := s.CloseIO(ctx, &taskAPI.CloseIORequest{ID: "c", Stdin: true}); err != nil {
		t.Errorf("CloseIO before Start: %v", err)
	}
}

// An execInput's messages become ContainerInput's, field for field.
func TestContainerInputMessages(t *testing.T) {
	size := &bulwarkv1.TerminalSize{Rows: 5, Cols: 7}
	for _, tc := range []struct {
		in   *bulwarkv1.ExecInput
		want *bulwarkv1.ContainerInputRequest
	}{
		{&bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Stdin{Stdin: []byte("ls\r")}},
			&bulwarkv1.ContainerInputRequest{Input: &bulwarkv1.ContainerInputRequest_Stdin{Stdin: []byte("ls\r")}}},
		{&bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_StdinClose{StdinClose: true}},
			&bulwarkv1.ContainerInputRequest{Input: &bulwarkv1.ContainerInputRequest_StdinClose{StdinClose: true}}},
		{&bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Resize{Resize: size}},
			&bulwarkv1.ContainerInputRequest{Input: &bulwarkv1.ContainerInputRequest_Resize{Resize: size}}},
	} {
		if got := containerInput(tc.in); !proto.Equal(got, tc.want) {
			t.Errorf("containerInput(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
