package channel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, TypeHello, Hello{Version: Version, PublicKey: []byte{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&buf, TypeStdout, []byte("out")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&buf, TypeStderr, nil); err != nil {
		t.Fatal(err)
	}
	typ, body, err := ReadFrame(&buf)
	if err != nil || typ != TypeHello {
		t.Fatalf("first frame: %v %v", typ, err)
	}
	var h Hello
	if err := Decode(typ, body, &h); err != nil || h.Version != Version || !bytes.Equal(h.PublicKey, []byte{1, 2, 3}) {
		t.Fatalf("hello = %+v, %v", h, err)
	}
	typ, body, err = ReadFrame(&buf)
	if err != nil || typ != TypeStdout || string(body) != "out" {
		t.Fatalf("second frame: %v %q %v", typ, body, err)
	}
	typ, body, err = ReadFrame(&buf)
	if err != nil || typ != TypeStderr || len(body) != 0 {
		t.Fatalf("third frame: %v %q %v", typ, body, err)
	}
	if _, _, err := ReadFrame(&buf); err != io.EOF {
		t.Fatalf("at end: %v, want io.EOF", err)
	}
}

func frame(n uint32, rest ...byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, n)
	return append(b, rest...)
}

func TestReadFrameErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"short header", []byte{0, 0}, io.ErrUnexpectedEOF},
		{"zero length", frame(0), ErrBadFrame},
		{"too large", frame(MaxFrameSize + 1), ErrFrameTooLarge},
		{"huge", frame(0xffffffff), ErrFrameTooLarge},
		{"missing type", frame(1), io.ErrUnexpectedEOF},
		{"unknown type", frame(1, 99), ErrBadFrame},
		{"type zero", frame(1, 0), ErrBadFrame},
		{"short body", frame(10, byte(TypeStdout), 'a'), io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ReadFrame(bytes.NewReader(tc.in))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestWriteFrameTooLarge(t *testing.T) {
	err := WriteFrame(io.Discard, TypeStdout, make([]byte, MaxFrameSize))
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v", err)
	}
	if err := WriteFrame(io.Discard, TypeStdout, make([]byte, MaxFrameSize-1)); err != nil {
		t.Fatalf("largest frame: %v", err)
	}
}

func TestDecodeStrict(t *testing.T) {
	var s Start
	for _, in := range []string{`{"sandbox_id":"a","extra":1}`, `{"sandbox_id":"a"} {}`, `[`, ``, `{"secrets":"x"}`} {
		if err := Decode(TypeStart, []byte(in), &s); !errors.Is(err, ErrBadFrame) {
			t.Errorf("Decode(%q) = %v, want ErrBadFrame", in, err)
		}
	}
}

func TestStartValidate(t *testing.T) {
	ok := Secret{Name: "db.password", Wrapped: []byte{1}}
	for _, tc := range []struct {
		name string
		s    Start
		err  string
	}{
		{"ok", Start{SandboxID: "0123abcd", Secrets: []Secret{ok}, Args: []string{"sh", "-c", "true"}}, ""},
		{"no id", Start{}, "sandbox id"},
		{"id with slash", Start{SandboxID: "a/b"}, "sandbox id"},
		{"long id", Start{SandboxID: strings.Repeat("a", 129)}, "sandbox id"},
		{"dotdot name", Start{SandboxID: "x", Secrets: []Secret{{Name: ".."}}}, "name"},
		{"slash name", Start{SandboxID: "x", Secrets: []Secret{{Name: "../etc/passwd"}}}, "name"},
		{"empty name", Start{SandboxID: "x", Secrets: []Secret{{Name: ""}}}, "name"},
		{"duplicate", Start{SandboxID: "x", Secrets: []Secret{ok, ok}}, "twice"},
		{"too many", Start{SandboxID: "x", Secrets: make([]Secret, MaxSecrets+1)}, "limit"},
		{"nul arg", Start{SandboxID: "x", Args: []string{"a\x00b"}}, "NUL"},
		{"workload", Start{SandboxID: "x", Env: []string{"A=1", "B="}, WorkingDir: "/srv", User: "app:staff", Network: NetworkUser}, ""},
		{"env without =", Start{SandboxID: "x", Env: []string{"A"}}, "KEY=VALUE"},
		{"env without key", Start{SandboxID: "x", Env: []string{"=1"}}, "KEY=VALUE"},
		{"env with NUL", Start{SandboxID: "x", Env: []string{"A=\x00"}}, "KEY=VALUE"},
		{"too many env", Start{SandboxID: "x", Env: make([]string, MaxEnv+1)}, "limit"},
		{"env too large", Start{SandboxID: "x", Env: []string{"A=" + strings.Repeat("a", MaxEnvBytes)}}, "limit"},
		{"relative workdir", Start{SandboxID: "x", WorkingDir: "srv"}, "working directory"},
		{"user with NUL", Start{SandboxID: "x", User: "a\x00"}, "user"},
		{"unknown network", Start{SandboxID: "x", Network: "bridge"}, "network"},
		{"tap", Start{SandboxID: "x", Network: NetworkTap, Address: "10.88.0.5/16", Gateway: "10.88.0.1"}, ""},
		{"tap without a gateway", Start{SandboxID: "x", Network: NetworkTap, Address: "10.88.0.5/16"}, ""},
		{"tap without an address", Start{SandboxID: "x", Network: NetworkTap}, "address"},
		{"tap with a bare address", Start{SandboxID: "x", Network: NetworkTap, Address: "10.88.0.5"}, "address"},
		{"tap with an IPv6 address", Start{SandboxID: "x", Network: NetworkTap, Address: "fd00::5/64"}, "address"},
		{"tap with a /0", Start{SandboxID: "x", Network: NetworkTap, Address: "10.88.0.5/0"}, "address"},
		{"tap with a bad gateway", Start{SandboxID: "x", Network: NetworkTap, Address: "10.88.0.5/16", Gateway: "gw"}, "gateway"},
		{"user with an address", Start{SandboxID: "x", Network: NetworkUser, Address: "10.88.0.5/16"}, "address"},
		{"tap with a MAC", Start{SandboxID: "x", Network: NetworkTap, Address: "10.88.0.5/16", MAC: "02:42:0a:58:00:05"}, ""},
		{"tap with a multicast MAC", Start{SandboxID: "x", Network: NetworkTap, Address: "10.88.0.5/16", MAC: "03:42:0a:58:00:05"}, "MAC"},
		{"tap with a long MAC", Start{SandboxID: "x", Network: NetworkTap, Address: "10.88.0.5/16", MAC: "02:42:0a:58:00:05:00:00"}, "MAC"},
		{"tap with an upper-case MAC", Start{SandboxID: "x", Network: NetworkTap, Address: "10.88.0.5/16", MAC: "02:42:0A:58:00:05"}, "MAC"},
		{"tap with a bad MAC", Start{SandboxID: "x", Network: NetworkTap, Address: "10.88.0.5/16", MAC: "eth0"}, "MAC"},
		{"user with a MAC", Start{SandboxID: "x", Network: NetworkUser, MAC: "02:42:0a:58:00:05"}, "MAC"},
		{"mounts", Start{SandboxID: "x", Mounts: []Mount{{Type: MountDisk, Serial: "bulwark-vol0", Target: "/data"}, {Type: MountTmpfs, Target: "/tmp/x", Size: 1 << 20}}}, ""},
		{"mount at the root", Start{SandboxID: "x", Mounts: []Mount{{Type: MountTmpfs, Target: "/"}}}, "target"},
		{"relative mount", Start{SandboxID: "x", Mounts: []Mount{{Type: MountTmpfs, Target: "data"}}}, "target"},
		{"disk without serial", Start{SandboxID: "x", Mounts: []Mount{{Type: MountDisk, Target: "/data"}}}, "serial"},
		{"disk serial with a slash", Start{SandboxID: "x", Mounts: []Mount{{Type: MountDisk, Serial: "../vda", Target: "/data"}}}, "serial"},
		{"negative tmpfs", Start{SandboxID: "x", Mounts: []Mount{{Type: MountTmpfs, Target: "/data", Size: -1}}}, "size"},
		{"scratch", Start{SandboxID: "x", Mounts: []Mount{{Type: MountScratch, Serial: "bulwark-scratch0", Target: "/data", Size: 16 << 20}}}, ""},
		{"scratch without serial", Start{SandboxID: "x", Mounts: []Mount{{Type: MountScratch, Target: "/data", Size: 16 << 20}}}, "serial"},
		{"scratch without size", Start{SandboxID: "x", Mounts: []Mount{{Type: MountScratch, Serial: "bulwark-scratch0", Target: "/data"}}}, "scratch disk"},
		{"unknown mount", Start{SandboxID: "x", Mounts: []Mount{{Type: "bind", Target: "/data"}}}, "want a disk"},
		{"too many mounts", Start{SandboxID: "x", Mounts: make([]Mount, MaxMounts+1)}, "limit"},
		{"tty", Start{SandboxID: "x", Stdin: true, TTY: &WindowSize{Rows: 24, Cols: 80}}, ""},
		{"tty at the bounds", Start{SandboxID: "x", TTY: &WindowSize{Rows: MaxWindowSize, Cols: 1}}, ""},
		{"tty without rows", Start{SandboxID: "x", TTY: &WindowSize{Cols: 80}}, "terminal size"},
		{"tty without columns", Start{SandboxID: "x", TTY: &WindowSize{Rows: 24}}, "terminal size"},
		{"tty too tall", Start{SandboxID: "x", TTY: &WindowSize{Rows: MaxWindowSize + 1, Cols: 80}}, "terminal size"},
		{"tty too wide", Start{SandboxID: "x", TTY: &WindowSize{Rows: 24, Cols: 65535}}, "terminal size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.Validate()
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.err)
			}
		})
	}
}

// TestResize: a RESIZE frame (type 24) round-trips, decodes strictly and
// is bounded like Start.TTY.
func TestResize(t *testing.T) {
	if TypeResize != 24 || TypeResize.String() != "RESIZE" || !TypeResize.Known() {
		t.Fatalf("RESIZE is %d %q known=%v", TypeResize, TypeResize, TypeResize.Known())
	}
	var buf bytes.Buffer
	if err := WriteJSON(&buf, TypeResize, WindowSize{Rows: 50, Cols: 132}); err != nil {
		t.Fatal(err)
	}
	if got, want := buf.String(), "\x00\x00\x00\x17\x18{\"rows\":50,\"cols\":132}"; got != want {
		t.Fatalf("RESIZE frame %q, want %q", got, want)
	}
	typ, body, err := ReadFrame(&buf)
	var ws WindowSize
	if err != nil || typ != TypeResize || Decode(typ, body, &ws) != nil || ws != (WindowSize{50, 132}) || ws.Validate() != nil {
		t.Fatalf("read back %v %q %v: %+v", typ, body, err, ws)
	}
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{"rows":1,"cols":1}`, true},
		{`{"rows":10000,"cols":10000}`, true},
		{`{"rows":0,"cols":80}`, false},
		{`{"rows":24,"cols":10001}`, false},
		{`{"rows":24,"cols":80,"x":1}`, false},
		{`{"rows":-1,"cols":80}`, false},
		{`{"rows":70000,"cols":80}`, false},
		{`{"rows":24,"cols":80} {}`, false},
	} {
		var ws WindowSize
		err := Decode(TypeResize, []byte(tc.body), &ws)
		if err == nil {
			err = ws.Validate()
		}
		if (err == nil) != tc.ok {
			t.Errorf("RESIZE %s: %v, want accepted %v", tc.body, err, tc.ok)
		}
	}
}

func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	WriteJSON(&buf, TypeStart, Start{SandboxID: "abc", Secrets: []Secret{{Name: "db", Wrapped: []byte("x")}}, Args: []string{"true"}})
	f.Add(bytes.Clone(buf.Bytes()))
	buf.Reset()
	WriteJSON(&buf, TypeStart, Start{SandboxID: "abc", Stdin: true, TTY: &WindowSize{Rows: 24, Cols: 80}})
	f.Add(bytes.Clone(buf.Bytes()))
	buf.Reset()
	WriteJSON(&buf, TypeResize, WindowSize{Rows: 50, Cols: 132})
	f.Add(bytes.Clone(buf.Bytes()))
	f.Add(frame(3, byte(TypeStdout), 'h', 'i'))
	f.Add(frame(0))
	f.Add(frame(MaxFrameSize + 1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		for {
			typ, body, err := ReadFrame(r)
			if err != nil {
				return
			}
			if !typ.Known() || len(body)+1 > MaxFrameSize {
				t.Fatalf("accepted bad frame %v len %d", typ, len(body))
			}
			var s Start
			if Decode(typ, body, &s) == nil && s.Validate() == nil && s.TTY != nil {
				if s.TTY.Rows < 1 || s.TTY.Rows > MaxWindowSize || s.TTY.Cols < 1 || s.TTY.Cols > MaxWindowSize {
					t.Fatalf("START with a terminal of %+v validated", *s.TTY)
				}
			}
			var ws WindowSize
			if Decode(typ, body, &ws) == nil && ws.Validate() == nil {
				if ws.Rows < 1 || ws.Rows > MaxWindowSize || ws.Cols < 1 || ws.Cols > MaxWindowSize {
					t.Fatalf("size %+v validated", ws)
				}
			}
			// Re-encoding what was read must give a frame that reads back the same.
			var out bytes.Buffer
			if err := WriteFrame(&out, typ, body); err != nil {
				t.Fatal(err)
			}
			typ2, body2, err := ReadFrame(&out)
			if err != nil || typ2 != typ || !bytes.Equal(body, body2) {
				t.Fatalf("round trip: %v %v", typ2, err)
			}
		}
	})
}

func TestExecValidate(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"ls", "-l"}, true},
		{nil, false},
		{[]string{""}, false},
		{[]string{"a\x00b"}, false},
		{make([]string, MaxExecArgs+1), false},
		{[]string{strings.Repeat("a", MaxExecArgsBytes+1)}, false},
	} {
		x := Exec{ID: 1, Args: tc.args}
		if err := x.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%d args): %v, want ok=%v", len(tc.args), err, tc.ok)
		}
	}
}

func FuzzDecodeExecOutput(f *testing.F) {
	f.Add(ExecOutput{ID: 3, Stream: 1, Data: []byte("x")}.Encode())
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := DecodeExecOutput(b)
		if err != nil {
			return
		}
		if !bytes.Equal(o.Encode(), b) {
			t.Fatalf("round trip of %x gives %x", b, o.Encode())
		}
	})
}

// TestExecInteractiveFrames: EXEC_STDIN (25) and EXEC_RESIZE (26) are the
// next frame types, and both decode strictly and bounded.
func TestExecInteractiveFrames(t *testing.T) {
	if TypeExecStdin != 25 || TypeExecResize != 26 || TypeExecStdin.String() != "EXEC_STDIN" || TypeExecResize.String() != "EXEC_RESIZE" ||
		!TypeExecStdin.Known() || !TypeExecResize.Known() {
		t.Fatalf("EXEC_STDIN %d %q, EXEC_RESIZE %d %q", TypeExecStdin, TypeExecStdin, TypeExecResize, TypeExecResize)
	}
	if got := (ExecInput{ID: 7, Data: []byte("hi")}).Encode(); string(got) != "\x00\x00\x00\x07hi" {
		t.Fatalf("EXEC_STDIN body %q", got)
	}
	for _, tc := range []struct {
		name string
		body []byte
		ok   bool
		eof  bool
	}{
		{"data", []byte("\x00\x00\x00\x01abc"), true, false},
		{"end of input", []byte("\x00\x00\x00\x01"), true, true},
		{"largest", append([]byte{0, 0, 0, 1}, make([]byte, MaxStdinChunk)...), true, false},
		{"too large", append([]byte{0, 0, 0, 1}, make([]byte, MaxStdinChunk+1)...), false, false},
		{"exec 0", []byte("\x00\x00\x00\x00a"), false, false},
		{"short", []byte{0, 0, 1}, false, false},
		{"empty", nil, false, false},
	} {
		in, err := DecodeExecInput(tc.body)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want accepted %v", tc.name, err, tc.ok)
		}
		if err == nil && (len(in.Data) == 0) != tc.eof {
			t.Errorf("%s: end of input %v, want %v", tc.name, len(in.Data) == 0, tc.eof)
		}
	}
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{"id":3,"rows":24,"cols":80}`, true},
		{`{"id":0,"rows":24,"cols":80}`, false},
		{`{"id":3,"rows":0,"cols":80}`, false},
		{`{"id":3,"rows":24,"cols":10001}`, false},
		{`{"id":3,"rows":24,"cols":80,"x":1}`, false},
		{`{"id":-3,"rows":24,"cols":80}`, false},
		{`{"id":3,"rows":24,"cols":80}{}`, false},
	} {
		var r ExecResize
		err := Decode(TypeExecResize, []byte(tc.body), &r)
		if err == nil {
			err = r.Validate()
		}
		if (err == nil) != tc.ok {
			t.Errorf("EXEC_RESIZE %s: %v, want accepted %v", tc.body, err, tc.ok)
		}
	}
	for _, tc := range []struct {
		tty *WindowSize
		ok  bool
	}{{nil, true}, {&WindowSize{24, 80}, true}, {&WindowSize{0, 80}, false}, {&WindowSize{24, MaxWindowSize + 1}, false}} {
		x := Exec{ID: 1, Args: []string{"sh"}, Stdin: true, TTY: tc.tty}
		if err := x.Validate(); (err == nil) != tc.ok {
			t.Errorf("Exec with terminal %v: %v, want ok=%v", tc.tty, err, tc.ok)
		}
	}
}

func FuzzDecodeExecInput(f *testing.F) {
	f.Add(ExecInput{ID: 3, Data: []byte("x")}.Encode())
	f.Add(ExecInput{ID: 3}.Encode())
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := DecodeExecInput(b)
		if err != nil {
			return
		}
		if in.ID == 0 || len(in.Data) > MaxStdinChunk {
			t.Fatalf("accepted %+v", in)
		}
		if !bytes.Equal(in.Encode(), b) {
			t.Fatalf("round trip of %x gives %x", b, in.Encode())
		}
	})
}

func FuzzDecodeExecResize(f *testing.F) {
	f.Add([]byte(`{"id":3,"rows":24,"cols":80}`))
	f.Add([]byte(`{"id":0,"rows":24,"cols":80}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r ExecResize
		if Decode(TypeExecResize, b, &r) != nil || r.Validate() != nil {
			return
		}
		if r.ID == 0 || r.Rows < 1 || r.Rows > MaxWindowSize || r.Cols < 1 || r.Cols > MaxWindowSize {
			t.Fatalf("accepted %+v", r)
		}
	})
}
