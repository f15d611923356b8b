package hostd

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/kvm/channel"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A container's stdin and terminal requests are checked with its other
// fields: a terminal of a size out of bounds is InvalidArgument naming
// tty (container_tty for a pod's first container), and the first
// container's are for a pod only.
func TestContainerStdioRefusesBadFields(t *testing.T) {
	co, err := addContainerOptions(&bulwarkv1.AddContainerRequest{Id: "abc", Name: "web", Image: "/srv/image",
		Stdin: true, Tty: &bulwarkv1.TerminalSize{Rows: 24, Cols: 80}})
	if err != nil || !co.Stdin || co.TTY == nil || *co.TTY != (kvm.WindowSize{Rows: 24, Cols: 80}) {
		t.Fatalf("a container with stdin and a terminal: %+v %v", co, err)
	}
	for _, tty := range []*bulwarkv1.TerminalSize{{Rows: 0, Cols: 80}, {Rows: 24, Cols: 0}, {Rows: channel.MaxWindowSize + 1, Cols: 80}} {
		_, err := addContainerOptions(&bulwarkv1.AddContainerRequest{Id: "abc", Name: "web", Image: "/srv/image", Tty: tty})
		if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), "tty:") {
			t.Errorf("AddContainer with a terminal of %dx%d: %v, want InvalidArgument naming tty", tty.Rows, tty.Cols, err)
		}
	}
	pod := func(edit func(*bulwarkv1.RunRequest)) *bulwarkv1.RunRequest {
		r := &bulwarkv1.RunRequest{Policy: "p", Image: "/srv/image", Pod: true, Container: "web"}
		edit(r)
		return r
	}
	for _, tc := range []struct {
		name  string
		req   *bulwarkv1.RunRequest
		field string // "": accepted
	}{
		{"pod with both", pod(func(r *bulwarkv1.RunRequest) {
			r.ContainerStdin, r.ContainerTty = true, &bulwarkv1.TerminalSize{Rows: 24, Cols: 80}
		}), ""},
		{"pod with a bad size", pod(func(r *bulwarkv1.RunRequest) { r.ContainerTty = &bulwarkv1.TerminalSize{Rows: 24} }), "container_tty:"},
		{"stdin without pod", pod(func(r *bulwarkv1.RunRequest) { r.Pod, r.Container, r.ContainerStdin = false, "", true }), "container_stdin:"},
		{"terminal without pod", pod(func(r *bulwarkv1.RunRequest) {
			r.Pod, r.Container, r.ContainerTty = false, "", &bulwarkv1.TerminalSize{Rows: 24, Cols: 80}
		}), "container_tty:"},
	} {
		_, err := runOptions(tc.req)
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.field != "" && (status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tc.field)):
			t.Errorf("%s: %v, want InvalidArgument naming %s", tc.name, err, tc.field)
		}
	}
	co, err = firstContainerStdio(pod(func(r *bulwarkv1.RunRequest) { r.ContainerTty = &bulwarkv1.TerminalSize{Rows: 5, Cols: 6} }))
	if err != nil || co.Name != "web" || co.Stdin || co.TTY == nil || co.TTY.Rows != 5 {
		t.Errorf("the first container's options: %+v %v", co, err)
	}
}

// ContainerInput refuses, through the served socket, a first message
// that names no container before anything reaches a guest:
// InvalidArgument naming the field, NotFound for no such pod.
func TestContainerInputRefusesBadFirst(t *testing.T) {
	c := serveService(t)
	ctx := context.Background()
	name := func(id, n string) *bulwarkv1.ContainerInputRequest {
		return &bulwarkv1.ContainerInputRequest{Input: &bulwarkv1.ContainerInputRequest_Container{Container: &bulwarkv1.ContainerRequest{Id: id, Name: n}}}
	}
	for _, tc := range []struct {
		name  string
		first *bulwarkv1.ContainerInputRequest
		code  codes.Code
		msg   string
	}{
		{"stdin first", &bulwarkv1.ContainerInputRequest{Input: &bulwarkv1.ContainerInputRequest_Stdin{Stdin: []byte("x")}}, codes.InvalidArgument, "container:"},
		{"empty first", &bulwarkv1.ContainerInputRequest{}, codes.InvalidArgument, "container:"},
		{"bad name", name("abc", "a/b"), codes.InvalidArgument, "name:"},
		{"no such pod", name("abc", "web"), codes.NotFound, ""},
	} {
		stream, err := c.ContainerInput(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(tc.first); err != nil {
			t.Fatal(err)
		}
		_, err = stream.CloseAndRecv()
		if status.Code(err) != tc.code || !strings.HasPrefix(status.Convert(err).Message(), tc.msg) {
			t.Errorf("%s: %v, want %v %q", tc.name, err, tc.code, tc.msg)
		}
	}
}

// sinkProbe serves ContainerInput with receiveContainerInput alone, into
// a recordingSink whose container has what the first message's name
// says ("stdin", "tty", "both", or "closed": stdin already ended); at a
// clean end it answers with what reached the container, in the answer's
// error field.
type sinkProbe struct {
	bulwarkv1.UnimplementedHostServer
}

// recordingSink records the input a container would get.
type recordingSink struct {
	stdin, tty bool
	mu         sync.Mutex
	got        strings.Builder
	closed     bool
}

func (r *recordingSink) HasStdin() bool { return r.stdin }
func (r *recordingSink) HasTTY() bool   { return r.tty }
func (r *recordingSink) Stdin(b []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("kvm: container 1: %w", launch.ErrInputEnded)
	}
	fmt.Fprintf(&r.got, "stdin %q;", b)
	return nil
}
func (r *recordingSink) CloseStdin() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.got.WriteString("close;")
	return nil
}
func (r *recordingSink) Resize(ws kvm.WindowSize) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(&r.got, "resize %dx%d;", ws.Rows, ws.Cols)
	return nil
}

func (sinkProbe) ContainerInput(stream bulwarkv1.Host_ContainerInputServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	n := first.GetContainer().GetName()
	sink := &recordingSink{stdin: n == "stdin" || n == "both" || n == "closed", tty: n == "tty" || n == "both", closed: n == "closed"}
	if err := receiveContainerInput(stream.Context(), stream, sink); err != nil {
		return err
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	return stream.SendAndClose(&bulwarkv1.Container{Name: n, Error: sink.got.String()})
}

// receiveContainerInput takes stdin, its end and sizes in bounds for a
// container that asked for them; anything out of place or out of bounds
// is InvalidArgument naming its field, and the end of the client's side
// does not end the container's stdin. Through a real gRPC stream.
func TestReceiveContainerInput(t *testing.T) {
	c := serveProbe(t, sinkProbe{})
	var (
		stdin = func(b string) *bulwarkv1.ContainerInputRequest {
			return &bulwarkv1.ContainerInputRequest{Input: &bulwarkv1.ContainerInputRequest_Stdin{Stdin: []byte(b)}}
		}
		closeIn = &bulwarkv1.ContainerInputRequest{Input: &bulwarkv1.ContainerInputRequest_StdinClose{StdinClose: true}}
		resize  = func(r, c uint32) *bulwarkv1.ContainerInputRequest {
			return &bulwarkv1.ContainerInputRequest{Input: &bulwarkv1.ContainerInputRequest_Resize{Resize: &bulwarkv1.TerminalSize{Rows: r, Cols: c}}}
		}
		ctr = func(name string) *bulwarkv1.ContainerInputRequest {
			return &bulwarkv1.ContainerInputRequest{Input: &bulwarkv1.ContainerInputRequest_Container{Container: &bulwarkv1.ContainerRequest{Id: "x", Name: name}}}
		}
	)
	for _, tc := range []struct {
		name string
		msgs []*bulwarkv1.ContainerInputRequest
		got  string
		code codes.Code
		msg  string
	}{
		{"stdin then its close", []*bulwarkv1.ContainerInputRequest{ctr("stdin"), stdin("ab"), stdin("c"), closeIn}, `stdin "ab";stdin "c";close;`, codes.OK, ""},
		{"the client's end leaves stdin open", []*bulwarkv1.ContainerInputRequest{ctr("stdin"), stdin("ab")}, `stdin "ab";`, codes.OK, ""},
		{"typed and resized", []*bulwarkv1.ContainerInputRequest{ctr("both"), resize(50, 132), stdin("ls\r")}, `resize 50x132;stdin "ls\r";`, codes.OK, ""},
		{"stdin without stdin", []*bulwarkv1.ContainerInputRequest{ctr("tty"), stdin("a")}, "", codes.InvalidArgument, "stdin:"},
		{"empty stdin", []*bulwarkv1.ContainerInputRequest{ctr("stdin"), stdin("")}, "", codes.InvalidArgument, "stdin:"},
		{"stdin too large", []*bulwarkv1.ContainerInputRequest{ctr("stdin"), stdin(strings.Repeat("a", channel.MaxStdinChunk+1))}, "", codes.InvalidArgument, "stdin:"},
		{"stdin after its close", []*bulwarkv1.ContainerInputRequest{ctr("stdin"), closeIn, stdin("a")}, "", codes.InvalidArgument, "stdin:"},
		{"stdin after a close in an earlier call", []*bulwarkv1.ContainerInputRequest{ctr("closed"), stdin("a")}, "", codes.InvalidArgument, "stdin:"},
		{"stdin_close without stdin", []*bulwarkv1.ContainerInputRequest{ctr("tty"), closeIn}, "", codes.InvalidArgument, "stdin_close:"},
		{"resize without a terminal", []*bulwarkv1.ContainerInputRequest{ctr("stdin"), resize(50, 132)}, "", codes.InvalidArgument, "resize:"},
		{"resize out of bounds", []*bulwarkv1.ContainerInputRequest{ctr("tty"), resize(0, 132)}, "", codes.InvalidArgument, "resize:"},
		{"container twice", []*bulwarkv1.ContainerInputRequest{ctr("tty"), ctr("tty")}, "", codes.InvalidArgument, "container:"},
		{"empty message", []*bulwarkv1.ContainerInputRequest{ctr("tty"), {}}, "", codes.InvalidArgument, "input:"},
	} {
		stream, err := c.ContainerInput(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range tc.msgs {
			if err := stream.Send(m); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
		}
		resp, err := stream.CloseAndRecv()
		if status.Code(err) != tc.code || !strings.HasPrefix(status.Convert(err).Message(), tc.msg) {
			t.Errorf("%s: %v, want %v %q", tc.name, err, tc.code, tc.msg)
		}
		if tc.code == codes.OK && resp.GetError() != tc.got {
			t.Errorf("%s: the container got %q, want %q", tc.name, resp.GetError(), tc.got)
		}
	}
}
