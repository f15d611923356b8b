package kvm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

func protoSandbox() *Sandbox {
	return &Sandbox{
		cfg:     Config{Stdout: io.Discard, Stderr: io.Discard},
		console: newLineTail(40, nil), qerr: newLineTail(20, nil),
		hello: make(chan struct{}), started: make(chan struct{}),
		exited: make(chan struct{}), readerDone: make(chan struct{}), eventsDone: make(chan struct{}),
	}
}

func jsonFrame(t testing.TB, typ channel.Type, v any) []byte {
	var b bytes.Buffer
	if err := channel.WriteJSON(&b, typ, v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func rawFrame(typ channel.Type, body string) []byte {
	var b bytes.Buffer
	channel.WriteFrame(&b, typ, []byte(body))
	return b.Bytes()
}

// feed applies frames as readGuest does and returns the first error.
// With sentStart the host sends START as soon as the guest is keyed, as
// StartWorkload does.
func feed(s *Sandbox, in []byte, sentStart bool) error {
	r := bytes.NewReader(in)
	for {
		typ, body, err := channel.ReadFrame(r)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.handleFrame(typ, body); err != nil {
			return err
		}
		if sentStart && s.state == stateKeyed {
			s.state = stateStarting
		}
	}
}

func TestHostProtocol(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	ready := jsonFrame(t, channel.TypeReady, channel.Ready{Version: channel.Version})
	// READY then HELLO: the handshake (IDENTITY is the host's reply to READY).
	hello := append(ready, jsonFrame(t, channel.TypeHello, channel.Hello{Version: channel.Version, PublicKey: key})...)
	started := jsonFrame(t, channel.TypeStarted, channel.Started{PID: 5})
	cat := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	for _, tc := range []struct {
		name      string
		sentStart bool
		in        []byte
		err       string
		exit      int
	}{
		{"full run", true, cat(hello, started, rawFrame(channel.TypeStdout, "out"), rawFrame(channel.TypeStderr, "err"), jsonFrame(t, channel.TypeExit, channel.Exit{Code: 3})), "", 3},
		{"output before start", true, cat(hello, rawFrame(channel.TypeStdout, "x")), "before the workload started", -1},
		{"started unasked", false, cat(hello, started), "out of order", -1},
		{"two hellos", false, cat(hello, hello), "second READY", -1},
		{"hello twice after one ready", false, cat(hello, jsonFrame(t, channel.TypeHello, channel.Hello{Version: channel.Version, PublicKey: key})), "second HELLO", -1},
		{"hello without ready (an older agent)", false, jsonFrame(t, channel.TypeHello, channel.Hello{Version: channel.Version, PublicKey: key}), "HELLO before READY", -1},
		{"short key", false, cat(ready, jsonFrame(t, channel.TypeHello, channel.Hello{Version: channel.Version, PublicKey: []byte{1}})), "public key", -1},
		{"wrong version", false, cat(ready, jsonFrame(t, channel.TypeHello, channel.Hello{Version: 99, PublicKey: key})), "version", -1},
		{"ready of another version", false, jsonFrame(t, channel.TypeReady, channel.Ready{Version: 1}), "protocol version 1", -1},
		{"exit before start", true, cat(hello, jsonFrame(t, channel.TypeExit, channel.Exit{Code: 0})), "out of order", -1},
		{"exit out of range", true, cat(hello, started, jsonFrame(t, channel.TypeExit, channel.Exit{Code: 1000})), "out of range", -1},
		{"host frame from guest", false, cat(hello, jsonFrame(t, channel.TypeStart, channel.Start{SandboxID: "x"})), "unexpected", -1},
		{"unknown field", false, cat(ready, rawFrame(channel.TypeHello, `{"version":2,"public_key":"","x":1}`)), "malformed", -1},
		{"pong unasked", true, cat(hello, started, jsonFrame(t, channel.TypePong, channel.Ping{Seq: 1})), "answers no PING", -1},
		{"done unasked", true, cat(hello, started, jsonFrame(t, channel.TypeDone, channel.Done{Seq: 1})), "answers no REVOKE or ROTATE", -1},
		{"done before start", true, cat(hello, jsonFrame(t, channel.TypeDone, channel.Done{Seq: 1})), "unexpected DONE", -1},
		{"revoke from the guest", true, cat(hello, started, jsonFrame(t, channel.TypeRevoke, channel.Revoke{Action: "stop"})), "unexpected REVOKE", -1},
		{"pong before start", true, cat(hello, jsonFrame(t, channel.TypePong, channel.Ping{Seq: 1})), "unexpected PONG", -1},
		{"output after exit", true, cat(hello, started, jsonFrame(t, channel.TypeExit, channel.Exit{Code: 0}), rawFrame(channel.TypeStdout, "x")), "unexpected STDOUT", -1},
		{"exec output before start", true, cat(hello, rawFrame(channel.TypeExecOut, "\x00\x00\x00\x01\x01x")), "unexpected EXEC_OUT", -1},
		{"exec exit never started", true, cat(hello, started, jsonFrame(t, channel.TypeExecExit, channel.ExecExit{ID: 9, Code: 0})), "never started", -1},
		{"exec exit out of range", true, cat(hello, started, jsonFrame(t, channel.TypeExecExit, channel.ExecExit{ID: 1, Code: 300})), "out of range", -1},
		{"exec output of another stream", true, cat(hello, started, rawFrame(channel.TypeExecOut, "\x00\x00\x00\x01\x07x")), "stream 7", -1},
		{"exec output too short", true, cat(hello, started, rawFrame(channel.TypeExecOut, "\x00\x01")), "malformed", -1},
		{"anything after an error", true, cat(hello, jsonFrame(t, channel.TypeError, channel.Error{Message: "x"}), started), "out of order", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := protoSandbox()
			var out, errOut bytes.Buffer
			s.cfg.Stdout, s.cfg.Stderr = &out, &errOut
			err := feed(s, tc.in, tc.sentStart)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.state != stateExited || s.exitCode != tc.exit || out.String() != "out" || errOut.String() != "err" {
				t.Fatalf("state %s exit %d out %q err %q", s.state, s.exitCode, out.String(), errOut.String())
			}
		})
	}
}

// An exec's output reaches its writers, in order, and its exit code its
// caller; output of an exec nobody waits for is dropped.
func TestHostProtocolExec(t *testing.T) {
	s := protoSandbox()
	s.state = stateRunning
	var out, errOut bytes.Buffer
	w := &execWaiter{stdout: &out, stderr: &errOut, exit: make(chan channel.ExecExit, 1)}
	s.execSeq, s.execs = 2, map[uint32]*execWaiter{2: w}
	in := bytes.Join([][]byte{
		rawFrame(channel.TypeExecOut, string(channel.ExecOutput{ID: 2, Stream: 1, Data: []byte("a")}.Encode())),
		rawFrame(channel.TypeExecOut, string(channel.ExecOutput{ID: 2, Stream: 2, Data: []byte("b")}.Encode())),
		rawFrame(channel.TypeExecOut, string(channel.ExecOutput{ID: 1, Stream: 1, Data: []byte("gone")}.Encode())),
		rawFrame(channel.TypeExecOut, string(channel.ExecOutput{ID: 2, Stream: 1, Data: []byte("c")}.Encode())),
		jsonFrame(t, channel.TypeExecExit, channel.ExecExit{ID: 2, Code: 4}),
		jsonFrame(t, channel.TypeExecExit, channel.ExecExit{ID: 2, Code: 4}), // a repeat finds no one
	}, nil)
	if err := feed(s, in, false); err != nil {
		t.Fatal(err)
	}
	if e := <-w.exit; e.Code != 4 || out.String() != "ac" || errOut.String() != "b" {
		t.Fatalf("exit %d, stdout %q, stderr %q", e.Code, out.String(), errOut.String())
	}
}

// TestHostProtocolTemplateAndClone: a guest booted for a template is held
// at READY (no IDENTITY, and nothing more is accepted from it); a clone
// starts identified (its READY came before the snapshot), so HELLO is its
// first frame and a READY is refused.
func TestHostProtocolTemplateAndClone(t *testing.T) {
	ready := jsonFrame(t, channel.TypeReady, channel.Ready{Version: channel.Version})
	hello := jsonFrame(t, channel.TypeHello, channel.Hello{Version: channel.Version, PublicKey: make([]byte, 32)})
	tpl := protoSandbox()
	tpl.mode.templateRAM = os.Stdin // any file: the sandbox makes a template
	tpl.ready = make(chan struct{})
	if err := feed(tpl, ready, false); err != nil || tpl.state != stateHeld {
		t.Fatalf("template: %v, state %s", err, tpl.state)
	}
	<-tpl.ready
	if err := feed(tpl, hello, false); err == nil || !strings.Contains(err.Error(), "held for a template snapshot") {
		t.Fatalf("a frame from a held guest: %v", err)
	}
	clone := protoSandbox()
	clone.state = stateIdentified
	if err := feed(clone, ready, false); err == nil || !strings.Contains(err.Error(), "second READY") {
		t.Fatalf("READY from a clone: %v", err)
	}
	clone = protoSandbox()
	clone.state = stateIdentified
	if err := feed(clone, hello, false); err != nil || clone.state != stateKeyed {
		t.Fatalf("HELLO from a clone: %v, state %s", err, clone.state)
	}
}

func TestHostProtocolGuestError(t *testing.T) {
	s := protoSandbox()
	in := bytes.Join([][]byte{
		jsonFrame(t, channel.TypeReady, channel.Ready{Version: channel.Version}),
		jsonFrame(t, channel.TypeHello, channel.Hello{Version: channel.Version, PublicKey: make([]byte, 32)}),
		jsonFrame(t, channel.TypeError, channel.Error{Message: "secret \"db\" does not open\x1b[2J"}),
	}, nil)
	if err := feed(s, in, true); err != nil {
		t.Fatal(err)
	}
	<-s.started
	var ge *GuestError
	if !errors.As(s.startErr, &ge) || strings.Contains(ge.Message, "\x1b") {
		t.Fatalf("startErr = %#v (control characters must be replaced)", s.startErr)
	}
}

// FuzzReadFrame drives the host's guest-frame handling with arbitrary
// bytes, as a hostile guest could send them.
func FuzzReadFrame(f *testing.F) {
	f.Add(jsonFrame(f, channel.TypeHello, channel.Hello{Version: channel.Version, PublicKey: make([]byte, 32)}), true)
	f.Add(bytes.Join([][]byte{
		jsonFrame(f, channel.TypeReady, channel.Ready{Version: channel.Version}),
		jsonFrame(f, channel.TypeHello, channel.Hello{Version: channel.Version, PublicKey: make([]byte, 32)}),
		jsonFrame(f, channel.TypeStarted, channel.Started{PID: 1}),
		rawFrame(channel.TypeStdout, "hi"),
		jsonFrame(f, channel.TypeExit, channel.Exit{Code: 0}),
	}, nil), true)
	f.Add(rawFrame(channel.TypeError, `{"message":"x"}`), false)
	f.Add(bytes.Join([][]byte{
		jsonFrame(f, channel.TypeReady, channel.Ready{Version: channel.Version}),
		jsonFrame(f, channel.TypeHello, channel.Hello{Version: channel.Version, PublicKey: make([]byte, 32)}),
		jsonFrame(f, channel.TypeStarted, channel.Started{PID: 1}),
		jsonFrame(f, channel.TypeDone, channel.Done{Seq: 1, Removed: 2}),
	}, nil), true)
	f.Fuzz(func(t *testing.T, in []byte, sentStart bool) {
		s := protoSandbox()
		s.dones = map[uint64]chan channel.Done{1: make(chan channel.Done, 1)} // a REVOKE awaiting its answer
		_ = feed(s, in, sentStart)
		if s.state == stateExited && (s.exitCode < 0 || s.exitCode > 255) {
			t.Fatalf("exit code %d accepted", s.exitCode)
		}
		if s.guestKey != nil && len(s.guestKey) != 32 {
			t.Fatalf("guest key of %d bytes accepted", len(s.guestKey))
		}
	})
}

func TestChooseAccel(t *testing.T) {
	ok := func() error { return nil }
	bad := func() error { return ErrKVMUnavailable }
	for _, tc := range []struct {
		want  string
		probe func() error
		got   string
		err   bool
	}{
		{"", ok, AccelKVM, false},
		{"auto", bad, AccelTCG, false},
		{"kvm", ok, AccelKVM, false},
		{"kvm", bad, "", true},
		{"tcg", ok, AccelTCG, false},
		{"hvf", ok, "", true},
	} {
		c, err := chooseAccel(tc.want, tc.probe)
		if (err != nil) != tc.err || c.Accel != tc.got {
			t.Errorf("chooseAccel(%q) = %+v, %v", tc.want, c, err)
		}
		if tc.want == "auto" && !strings.Contains(c.Reason, "TCG") {
			t.Errorf("fallback reason %q does not say TCG", c.Reason)
		}
	}
}

func TestProbeKVM(t *testing.T) {
	dir := t.TempDir()
	dev := dir + "/kvm"
	if err := probeKVM(dir, dev); !errors.Is(err, ErrKVMUnavailable) {
		t.Fatalf("no modules: %v", err)
	}
	mkdir(t, dir+"/kvm_pvm")
	if err := probeKVM(dir, dev); err == nil || !strings.Contains(err.Error(), "kvm_pvm") {
		t.Fatalf("pvm only: %v", err)
	}
	mkdir(t, dir+"/kvm_intel")
	if err := probeKVM(dir, dev); err == nil || !strings.Contains(err.Error(), "cannot be opened") {
		t.Fatalf("no device: %v", err)
	}
	writeFile(t, dev, "")
	if err := probeKVM(dir, dev); err != nil {
		t.Fatalf("usable: %v", err)
	}
}

func TestDefaultCmdline(t *testing.T) {
	tcg, err := DefaultCmdline(AccelTCG)
	if err != nil {
		t.Fatal(err)
	}
	tcg2, _ := DefaultCmdline(AccelTCG)
	if tcg != tcg2 || !strings.Contains(tcg, "tsc_early_khz=") || !strings.HasSuffix(tcg, " tsc=reliable") || !strings.Contains(tcg, "panic=-1") {
		t.Fatalf("tcg cmdline %q / %q", tcg, tcg2)
	}
	kvm, err := DefaultCmdline(AccelKVM)
	if err != nil || strings.Contains(kvm, "tsc_early_khz") || strings.Contains(kvm, "tsc=reliable") {
		t.Fatalf("kvm cmdline %q %v", kvm, err)
	}
	if _, err := DefaultCmdline("auto"); err == nil {
		t.Fatal("auto accepted")
	}
}

func TestCgroupLimits(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root+"/cgroup.controllers", "cpuset cpu io memory pids\n")
	cg, err := newCgroup(root+"/bulwark", "sb1", 2, 512, AccelTCG, false)
	if err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		root + "/cgroup.subtree_control":         "+cpu +memory",
		root + "/bulwark/cgroup.subtree_control": "+cpu +memory",
		root + "/bulwark/sb1/cpu.max":            "200000 100000",
		root + "/bulwark/sb1/memory.max":         "1342177280", // 512 MiB + 768 MiB TCG overhead
		root + "/bulwark/sb1/pids.max":           "1024",
	} {
		if got := readFile(t, file); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	// remove only works on an empty directory, as with real cgroups.
	for _, f := range []string{"cpu.max", "memory.max", "memory.swap.max", "pids.max"} {
		removeFile(t, root+"/bulwark/sb1/"+f)
	}
	if err := cg.remove(); err != nil {
		t.Fatal(err)
	}
	// Missing controllers: refused (Start then refuses to run, unless told "none").
	writeFile(t, root+"/cgroup.controllers", "pids\n")
	if _, err := newCgroup(root+"/bulwark", "sb2", 1, 256, AccelKVM, false); err == nil {
		t.Fatal("accepted a hierarchy without cpu/memory controllers")
	}
}

func TestTSCFromCPUInfo(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		err  bool
	}{
		{"processor\t: 0\ncpu MHz\t\t: 2596.136\n", 2596000, false},
		{"cpu MHz : 2999.6\n", 3000000, false},
		{"model name : x\n", 0, true},
		{"cpu MHz : fast\n", 0, true},
		{"cpu MHz : -1\n", 0, true},
	} {
		got, err := tscFromCPUInfo(bufio.NewScanner(strings.NewReader(tc.in)))
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("%q: %d, %v", tc.in, got, err)
		}
	}
}

// TestHostRevokeRotate: REVOKE and ROTATE go out with their own sequence
// numbers while the workload runs, and each waits for the agent's DONE
// naming it; refused before the workload runs.
func TestHostRevokeRotate(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	defer hostEnd.Close()
	defer guestEnd.Close()
	s := protoSandbox()
	s.conn = hostEnd
	if _, err := s.Revoke(t.Context(), channel.RevokeStop, nil, 0); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("revoke before the workload runs: %v", err)
	}
	s.state = stateRunning
	guest := bufio.NewReader(guestEnd)
	answer := func(removed int, msg string) {
		typ, body, err := channel.ReadFrame(guest)
		if err != nil {
			t.Error(err)
			return
		}
		var seq struct {
			Seq uint64 `json:"seq"`
		}
		var r channel.Revoke
		var rot channel.Rotate
		switch typ {
		case channel.TypeRevoke:
			err = channel.Decode(typ, body, &r)
			seq.Seq = r.Seq
		case channel.TypeRotate:
			err = channel.Decode(typ, body, &rot)
			seq.Seq = rot.Seq
		default:
			t.Errorf("the guest got %s", typ)
		}
		if err != nil {
			t.Error(err)
		}
		if err := s.handleFrame(channel.TypeDone, jsonFrame(t, channel.TypeDone, channel.Done{Seq: seq.Seq, Removed: removed, Error: msg})[5:]); err != nil {
			t.Error(err)
		}
	}
	go answer(2, "")
	if n, err := s.Revoke(t.Context(), channel.RevokeWipeSecrets, []string{"a", "b"}, 0); n != 2 || err != nil {
		t.Fatalf("revoke: %d, %v", n, err)
	}
	go answer(0, "secret \"db\" does not open")
	if err := s.Rotate(t.Context(), []Secret{{Name: "db", Wrapped: []byte{1}}}); err == nil || !strings.Contains(err.Error(), "does not open") {
		t.Fatalf("rotate refused by the guest: %v", err)
	}
	if err := s.Rotate(t.Context(), nil); err == nil {
		t.Fatal("an empty rotation was sent")
	}
	if _, err := s.Revoke(t.Context(), "explode", nil, 0); err == nil {
		t.Fatal("an unknown action was sent")
	}
}

// Exec refuses past channel.MaxExecs at once, and when the workload does
// not run, before anything is sent to the guest.
func TestExecRefusals(t *testing.T) {
	s := protoSandbox()
	if _, err := s.Exec(context.Background(), []string{"true"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("exec before the workload runs: %v", err)
	}
	s.state = stateRunning
	s.execs = map[uint32]*execWaiter{}
	for i := range channel.MaxExecs {
		s.execs[uint32(i+1)] = &execWaiter{}
	}
	if _, err := s.Exec(context.Background(), []string{"true"}, io.Discard, io.Discard); !errors.Is(err, ErrExecLimit) {
		t.Errorf("exec past the limit: %v, want ErrExecLimit", err)
	}
	delete(s.execs, 1)
	if _, err := s.Exec(context.Background(), []string{""}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "empty command") {
		t.Errorf("exec of an empty command: %v", err)
	}
}

// TestIdentityFromInjectedRandAndClock: IDENTITY's entropy and time come
// from Config.Rand and Config.Now (crypto/rand and the real clock by
// default), so a test can fix what the guest is given.
func TestIdentityFromInjectedRandAndClock(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	defer hostEnd.Close()
	defer guestEnd.Close()
	s := protoSandbox()
	s.conn = hostEnd
	at := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	s.cfg.Name, s.cfg.Rand, s.cfg.Now = "sb1", bytes.NewReader(bytes.Repeat([]byte{0x42}, 64)), func() time.Time { return at }
	errc := make(chan error, 1)
	go func() { errc <- s.sendIdentity() }()
	typ, body, err := channel.ReadFrame(bufio.NewReader(guestEnd))
	if err != nil || typ != channel.TypeIdentity {
		t.Fatalf("frame %s: %v", typ, err)
	}
	var id channel.Identity
	if err := channel.Decode(typ, body, &id); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(id.Entropy, bytes.Repeat([]byte{0x42}, 64)) || id.UnixNano != at.UnixNano() || id.SandboxID != "sb1" {
		t.Fatalf("identity %+v: want the injected entropy, time and the name", id)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// A source that runs dry is an error, not a weaker identity.
	s = protoSandbox()
	s.conn = hostEnd
	s.cfg.Rand = bytes.NewReader(make([]byte, 10))
	if err := s.sendIdentity(); err == nil || !strings.Contains(err.Error(), "entropy") {
		t.Fatalf("a short entropy source: %v", err)
	}
}
