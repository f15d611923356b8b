package hostd

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/kvm/channel"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ExecInteractive refuses, through the served socket, a first message
// that is not a valid command before anything runs: InvalidArgument
// naming the field, NotFound for no such sandbox.
func TestExecInteractiveRefusesBadStart(t *testing.T) {
	c := serveService(t)
	ctx := context.Background()
	start := func(st *bulwarkv1.ExecStart) *bulwarkv1.ExecInput {
		return &bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Start{Start: st}}
	}
	sh := &bulwarkv1.ExecRequest{Id: "abc", Args: []string{"sh"}}
	for _, tc := range []struct {
		name  string
		first *bulwarkv1.ExecInput
		code  codes.Code
		msg   string
	}{
		{"stdin first", &bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Stdin{Stdin: []byte("x")}}, codes.InvalidArgument, "start:"},
		{"empty first", &bulwarkv1.ExecInput{}, codes.InvalidArgument, "start:"},
		{"no exec", start(&bulwarkv1.ExecStart{Stdin: true}), codes.InvalidArgument, "start.exec:"},
		{"no args", start(&bulwarkv1.ExecStart{Exec: &bulwarkv1.ExecRequest{Id: "abc"}}), codes.InvalidArgument, "args:"},
		{"tty of 0 rows", start(&bulwarkv1.ExecStart{Exec: sh, Tty: &bulwarkv1.TerminalSize{Rows: 0, Cols: 80}}), codes.InvalidArgument, "start.tty:"},
		{"tty too wide", start(&bulwarkv1.ExecStart{Exec: sh, Tty: &bulwarkv1.TerminalSize{Rows: 24, Cols: channel.MaxWindowSize + 1}}), codes.InvalidArgument, "start.tty:"},
		{"no such sandbox", start(&bulwarkv1.ExecStart{Exec: sh, Stdin: true, Tty: &bulwarkv1.TerminalSize{Rows: 24, Cols: 80}}), codes.NotFound, ""},
	} {
		stream, err := c.ExecInteractive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(tc.first); err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		if status.Code(err) != tc.code || !strings.HasPrefix(status.Convert(err).Message(), tc.msg) {
			t.Errorf("%s: %v, want %v %q", tc.name, err, tc.code, tc.msg)
		}
	}
}

// inputProbe serves ExecInteractive with receiveExecInput alone: it
// reports as output what reached the command's stdin and terminal, then
// the error receiveExecInput ended with.
type inputProbe struct {
	bulwarkv1.UnimplementedHostServer
}

func (inputProbe) ExecInteractive(stream bulwarkv1.Host_ExecInteractiveServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	var pr *io.PipeReader
	var pw *io.PipeWriter
	if first.GetStart().GetStdin() {
		pr, pw = io.Pipe()
	}
	var resize chan kvm.WindowSize
	if first.GetStart().GetTty() != nil {
		resize = make(chan kvm.WindowSize, 1)
	}
	out := func(s string) error {
		return stream.Send(&bulwarkv1.ExecEvent{Event: &bulwarkv1.ExecEvent_Output{Output: &bulwarkv1.LogChunk{Data: []byte(s)}}})
	}
	got := make(chan string, 1)
	if pr != nil {
		go func() {
			b, err := io.ReadAll(pr)
			got <- fmt.Sprintf("stdin %q end %v;", b, err)
		}()
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	signals := make(chan int)
	errc := make(chan error, 1)
	go func() { errc <- receiveExecInput(ctx, stream, pw, resize, signals) }()
	for {
		select {
		case sig := <-signals:
			if err := out(fmt.Sprintf("signal %d;", sig)); err != nil {
				return err
			}
		case ws := <-resize:
			if err := out(fmt.Sprintf("resize %dx%d;", ws.Rows, ws.Cols)); err != nil {
				return err
			}
		case err := <-errc:
			if pr != nil {
				if err != nil { // stdin was not ended: end its reader
					pr.Close()
				}
				if err := out(<-got); err != nil {
					return err
				}
			}
			return err
		}
	}
}

// receiveExecInput takes stdin, its end, sizes and signals in bounds after the
// command; anything out of place or out of bounds is InvalidArgument
// naming its field. Through a real gRPC stream.
func TestReceiveExecInput(t *testing.T) {
	c := serveProbe(t, inputProbe{})
	var (
		stdin = func(b string) *bulwarkv1.ExecInput {
			return &bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Stdin{Stdin: []byte(b)}}
		}
		closeIn = &bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_StdinClose{StdinClose: true}}
		resize  = func(r, c uint32) *bulwarkv1.ExecInput {
			return &bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Resize{Resize: &bulwarkv1.TerminalSize{Rows: r, Cols: c}}}
		}
		signal = func(n uint32) *bulwarkv1.ExecInput {
			return &bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Signal{Signal: n}}
		}
		start = func(in, tty bool) *bulwarkv1.ExecInput {
			st := &bulwarkv1.ExecStart{Exec: &bulwarkv1.ExecRequest{Id: "x", Args: []string{"sh"}}, Stdin: in}
			if tty {
				st.Tty = &bulwarkv1.TerminalSize{Rows: 24, Cols: 80}
			}
			return &bulwarkv1.ExecInput{Input: &bulwarkv1.ExecInput_Start{Start: st}}
		}
	)
	for _, tc := range []struct {
		name      string
		msgs      []*bulwarkv1.ExecInput
		closeSend bool
		out       string
		code      codes.Code
		msg       string
	}{
		{"stdin then its close", []*bulwarkv1.ExecInput{start(true, false), stdin("ab"), stdin("c"), closeIn}, true, `stdin "abc" end <nil>;`, codes.OK, ""},
		{"the client's end ends stdin", []*bulwarkv1.ExecInput{start(true, false), stdin("ab")}, true, `stdin "ab" end <nil>;`, codes.OK, ""},
		{"resizes", []*bulwarkv1.ExecInput{start(false, true), resize(50, 132)}, true, "resize 50x132;", codes.OK, ""},
		{"stdin without start.stdin", []*bulwarkv1.ExecInput{start(false, true), stdin("a")}, false, "", codes.InvalidArgument, "stdin:"},
		{"empty stdin", []*bulwarkv1.ExecInput{start(true, false), stdin("")}, false, "", codes.InvalidArgument, "stdin:"},
		{"stdin too large", []*bulwarkv1.ExecInput{start(true, false), stdin(strings.Repeat("a", channel.MaxStdinChunk+1))}, false, "", codes.InvalidArgument, "stdin:"},
		{"stdin after its close", []*bulwarkv1.ExecInput{start(true, false), closeIn, stdin("a")}, false, "", codes.InvalidArgument, "stdin:"},
		{"stdin_close without start.stdin", []*bulwarkv1.ExecInput{start(false, false), closeIn}, false, "", codes.InvalidArgument, "stdin_close:"},
		{"resize without start.tty", []*bulwarkv1.ExecInput{start(true, false), resize(50, 132)}, false, "", codes.InvalidArgument, "resize:"},
		{"resize out of bounds", []*bulwarkv1.ExecInput{start(false, true), resize(0, 132)}, false, "", codes.InvalidArgument, "resize:"},
		{"signals, without stdin or a terminal", []*bulwarkv1.ExecInput{start(false, false), signal(2), signal(15), signal(64)}, true, "signal 2;signal 15;signal 64;", codes.OK, ""},
		{"signal 0", []*bulwarkv1.ExecInput{start(false, false), signal(0)}, false, "", codes.InvalidArgument, "signal:"},
		{"signal past 64", []*bulwarkv1.ExecInput{start(true, true), signal(65)}, false, "", codes.InvalidArgument, "signal:"},
		{"start twice", []*bulwarkv1.ExecInput{start(false, true), start(false, true)}, false, "", codes.InvalidArgument, "start:"},
		{"empty message", []*bulwarkv1.ExecInput{start(false, true), {}}, false, "", codes.InvalidArgument, "input:"},
	} {
		stream, err := c.ExecInteractive(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range tc.msgs {
			if err := stream.Send(m); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
		}
		if tc.closeSend {
			stream.CloseSend()
		}
		var out strings.Builder
		for {
			ev, err := stream.Recv()
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				if status.Code(err) != tc.code || !strings.HasPrefix(status.Convert(err).Message(), tc.msg) {
					t.Errorf("%s: %v, want %v %q", tc.name, err, tc.code, tc.msg)
				}
				break
			}
			out.Write(ev.GetOutput().GetData())
		}
		if tc.code == codes.OK && out.String() != tc.out {
			t.Errorf("%s: the command got %q, want %q", tc.name, out.String(), tc.out)
		}
	}
}
