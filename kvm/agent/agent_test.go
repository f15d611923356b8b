package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

func writeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, body := range files {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if target, ok := strings.CutPrefix(body, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(body, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestResolveUser(t *testing.T) {
	root := writeRoot(t, map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1001:App:/home/app:/bin/sh\nbad:x:zz:1:::\n",
		"etc/group":  "root:x:0:\nstaff:x:50:\napp:x:1001:\n",
	})
	for _, tc := range []struct {
		user     string
		uid, gid uint32
		home     string
		err      string
	}{
		{"", 0, 0, "/root", ""},
		{"0", 0, 0, "/root", ""},
		{"app", 1000, 1001, "/home/app", ""},
		{"1000", 1000, 1001, "/home/app", ""},
		{"1000:50", 1000, 50, "/home/app", ""},
		{"app:staff", 1000, 50, "/home/app", ""},
		{"4242", 4242, 0, "/", ""},
		{"4242:7", 4242, 7, "/", ""},
		{"nobody", 0, 0, "", "not found"},
		{"app:nogroup", 0, 0, "", "not found"},
		{"bad", 0, 0, "", "bad /etc/passwd"},
	} {
		id, err := ResolveUser(root, tc.user)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ResolveUser(%q) err = %v, want %q", tc.user, err, tc.err)
			}
			continue
		}
		if err != nil || id.UID != tc.uid || id.GID != tc.gid || id.Home != tc.home {
			t.Errorf("ResolveUser(%q) = %+v, %v; want %d:%d %s", tc.user, id, err, tc.uid, tc.gid, tc.home)
		}
	}
}

func TestResolveUserSymlinkedPasswd(t *testing.T) {
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "passwd"), []byte("evil:x:0:0::/:/bin/sh\n"), 0o644)
	root := writeRoot(t, map[string]string{
		"etc/passwd":      "->/real/passwd",
		"real/passwd":     "app:x:7:8::/home:/bin/sh\n",
		"other/etc/group": "",
	})
	if id, err := ResolveUser(root, "app"); err != nil || id.UID != 7 || id.GID != 8 {
		t.Fatalf("through an in-root symlink: %+v %v", id, err)
	}
	os.Remove(filepath.Join(root, "etc/passwd"))
	os.Symlink(filepath.Join(outside, "passwd"), filepath.Join(root, "etc/passwd"))
	if _, err := ResolveUser(root, "evil"); err == nil {
		t.Fatal("read a passwd file outside the root")
	}
}

func TestLookPath(t *testing.T) {
	root := writeRoot(t, map[string]string{
		"usr/bin/tool":  "#!/bin/sh\n",
		"usr/bin/data":  "not executable",
		"bin":           "->usr/bin",
		"opt/abs":       "->/usr/bin/tool", // absolute: must resolve inside root
		"opt/escape":    "->../../../../../../bin/sh",
		"work/run.sh":   "#!/bin/sh\n",
		"sbin/loop":     "->/sbin/loop",
		"usr/local/lib": "",
	})
	env := []string{"PATH=/opt:/bin"}
	for _, tc := range []struct {
		name, want, err string
	}{
		{"tool", "/bin/tool", ""},
		{"abs", "/opt/abs", ""},
		{"/usr/bin/tool", "/usr/bin/tool", ""},
		{"./run.sh", "./run.sh", ""},
		{"data", "", "not found"},
		{"missing", "", "not found"},
		{"/sbin/loop", "", "not an executable"},
		{"escape", "", "not found"}, // ".." stops at root: /bin/sh does not exist in this root
	} {
		got, err := LookPath(root, tc.name, env, "/work")
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("LookPath(%q) = %q, %v; want error %q", tc.name, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("LookPath(%q) = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestEnvAndCommand(t *testing.T) {
	env := Env([]string{"A=1", "bogus", "=x", "HOME=/h"}, "/root", "abc")
	want := []string{"A=1", "HOME=/h", "PATH=" + DefaultPath, "HOSTNAME=abc"}
	if strings.Join(env, ",") != strings.Join(want, ",") {
		t.Errorf("Env = %v, want %v", env, want)
	}
	cfg := channel.ImageConfig{Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo hi"}}
	if got, _ := Command(cfg, nil); strings.Join(got, "|") != "/bin/sh|-c|echo hi" {
		t.Errorf("Command = %v", got)
	}
	if got, _ := Command(cfg, []string{"true"}); strings.Join(got, "|") != "true" {
		t.Errorf("Command override = %v", got)
	}
	if _, err := Command(channel.ImageConfig{}, nil); err == nil {
		t.Error("empty command accepted")
	}
}

func TestExitCode(t *testing.T) {
	if ExitCode(true, 7, false, 0) != 7 || ExitCode(false, 0, true, 9) != 137 || ExitCode(false, 0, false, 0) != 255 {
		t.Error("ExitCode mapping")
	}
}

func TestReadHostMessage(t *testing.T) {
	var b bytes.Buffer
	channel.WriteJSON(&b, channel.TypeStart, channel.Start{SandboxID: "abc", Secrets: []channel.Secret{{Name: "db", Wrapped: []byte{1}}}})
	channel.WriteJSON(&b, channel.TypeAbort, channel.Abort{Reason: "no"})
	channel.WriteJSON(&b, channel.TypeStart, channel.Start{SandboxID: "abc", Secrets: []channel.Secret{{Name: "../etc/shadow"}}})
	channel.WriteJSON(&b, channel.TypeHello, channel.Hello{Version: 1})
	m, err := ReadHostMessage(&b)
	if err != nil || m.Start == nil || m.Start.Secrets[0].Name != "db" {
		t.Fatalf("start: %+v %v", m, err)
	}
	m, err = ReadHostMessage(&b)
	if err != nil || m.Abort == nil || m.Abort.Reason != "no" {
		t.Fatalf("abort: %+v %v", m, err)
	}
	if _, err = ReadHostMessage(&b); err == nil {
		t.Fatal("path-like secret name accepted")
	}
	if _, err = ReadHostMessage(&b); err == nil {
		t.Fatal("HELLO from the host accepted")
	}
	// IDENTITY: 32..512 bytes of entropy and a time after 1970.
	for _, tc := range []struct {
		id channel.Identity
		ok bool
	}{
		{channel.Identity{Entropy: make([]byte, 64), UnixNano: 1_700_000_000_000_000_000, SandboxID: "sb1"}, true},
		{channel.Identity{Entropy: make([]byte, 31), UnixNano: 1, SandboxID: "sb1"}, false},
		{channel.Identity{Entropy: make([]byte, 513), UnixNano: 1, SandboxID: "sb1"}, false},
		{channel.Identity{Entropy: make([]byte, 32), UnixNano: 0, SandboxID: "sb1"}, false},
		{channel.Identity{Entropy: make([]byte, 32), UnixNano: 1}, false},
		{channel.Identity{Entropy: make([]byte, 32), UnixNano: 1, SandboxID: "a/b"}, false},
	} {
		var ib bytes.Buffer
		channel.WriteJSON(&ib, channel.TypeIdentity, tc.id)
		m, err := ReadHostMessage(&ib)
		if tc.ok != (err == nil && m.Identity != nil) {
			t.Errorf("IDENTITY %d bytes at %d: %+v %v, want accepted %v", len(tc.id.Entropy), tc.id.UnixNano, m, err, tc.ok)
		}
	}
	// STDIN: raw input up to MaxStdinChunk; empty is the end of input.
	for _, tc := range []struct {
		n       int
		ok, eof bool
	}{{5, true, false}, {0, true, true}, {channel.MaxStdinChunk, true, false}, {channel.MaxStdinChunk + 1, false, false}} {
		var sb bytes.Buffer
		channel.WriteFrame(&sb, channel.TypeStdin, make([]byte, tc.n))
		m, err := ReadHostMessage(&sb)
		if tc.ok != (err == nil) || m.StdinEOF != tc.eof || (tc.ok && !tc.eof && len(m.Stdin) != tc.n) {
			t.Errorf("STDIN of %d bytes: %+v %v, want accepted %v, end of input %v", tc.n, m, err, tc.ok, tc.eof)
		}
	}
	// REVOKE and ROTATE: a known action, safe unique names; anything else refused.
	for _, tc := range []struct {
		t    channel.Type
		body string
		ok   bool
	}{
		{channel.TypeRevoke, `{"seq":1,"action":"stop"}`, true},
		{channel.TypeRevoke, `{"seq":1,"action":"wipe-secrets","names":["db"],"grace_seconds":5}`, true},
		{channel.TypeRevoke, `{"seq":1,"action":"explode"}`, false},
		{channel.TypeRevoke, `{"seq":1,"action":"stop","names":["../etc/shadow"]}`, false},
		{channel.TypeRevoke, `{"seq":1,"action":"stop","names":["a","a"]}`, false},
		{channel.TypeRevoke, `{"seq":1,"action":"stop","grace_seconds":-1}`, false},
		{channel.TypeRotate, `{"seq":2,"secrets":[{"name":"db","wrapped":"AQ=="}]}`, true},
		{channel.TypeRotate, `{"seq":2,"secrets":[]}`, false},
		{channel.TypeRotate, `{"seq":2,"secrets":[{"name":"..","wrapped":"AQ=="}]}`, false},
		{channel.TypeRotate, `{"seq":2,"secrets":[{"name":"db"}],"x":1}`, false},
		{channel.TypeDone, `{"seq":2}`, false}, // the guest's frame
	} {
		var rb bytes.Buffer
		channel.WriteFrame(&rb, tc.t, []byte(tc.body))
		m, err := ReadHostMessage(&rb)
		if tc.ok != (err == nil && (m.Revoke != nil || m.Rotate != nil)) {
			t.Errorf("%s %s: %+v %v, want accepted %v", tc.t, tc.body, m, err, tc.ok)
		}
	}
	// RESIZE: rows and columns 1..MaxWindowSize, strict JSON.
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{"rows":24,"cols":80}`, true},
		{`{"rows":10000,"cols":1}`, true},
		{`{"rows":0,"cols":80}`, false},
		{`{"rows":24,"cols":10001}`, false},
		{`{"rows":24}`, false},
		{`{"rows":24,"cols":80,"x":1}`, false},
		{`{"rows":"24","cols":80}`, false},
		{``, false},
	} {
		var rb bytes.Buffer
		channel.WriteFrame(&rb, channel.TypeResize, []byte(tc.body))
		m, err := ReadHostMessage(&rb)
		if tc.ok != (err == nil && m.Resize != nil) {
			t.Errorf("RESIZE %s: %+v %v, want accepted %v", tc.body, m, err, tc.ok)
		}
	}
	// EXEC_STDIN, EXEC_RESIZE and EXEC_SIGNAL: an exec id, bounded input,
	// a valid size, a signal of 1..64.
	for _, tc := range []struct {
		t    channel.Type
		body string
		ok   bool
	}{
		{channel.TypeExecStdin, "\x00\x00\x00\x02abc", true},
		{channel.TypeExecStdin, "\x00\x00\x00\x02", true},
		{channel.TypeExecStdin, "\x00\x00\x00\x00abc", false},
		{channel.TypeExecStdin, "\x00\x02", false},
		{channel.TypeExecStdin, "\x00\x00\x00\x02" + strings.Repeat("a", channel.MaxStdinChunk+1), false},
		{channel.TypeExecResize, `{"id":2,"rows":24,"cols":80}`, true},
		{channel.TypeExecResize, `{"id":0,"rows":24,"cols":80}`, false},
		{channel.TypeExecResize, `{"id":2,"rows":24,"cols":0}`, false},
		{channel.TypeExecResize, `{"id":2,"rows":24,"cols":80,"x":1}`, false},
		{channel.TypeExecSignal, `{"id":2,"signal":15}`, true},
		{channel.TypeExecSignal, `{"id":0,"signal":15}`, false},
		{channel.TypeExecSignal, `{"id":2,"signal":0}`, false},
		{channel.TypeExecSignal, `{"id":2,"signal":65}`, false},
		{channel.TypeExecSignal, `{"id":2,"signal":9,"pid":1}`, false},
	} {
		var rb bytes.Buffer
		channel.WriteFrame(&rb, tc.t, []byte(tc.body))
		m, err := ReadHostMessage(&rb)
		if tc.ok != (err == nil && (m.ExecStdin != nil || m.ExecResize != nil || m.ExecSignal != nil)) {
			t.Errorf("%s %.40q: %+v %v, want accepted %v", tc.t, tc.body, m, err, tc.ok)
		}
	}
	// STOP: a grace period within 0..MaxStopGraceSeconds; anything else refused.
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{"grace_seconds":10}`, true},
		{`{"grace_seconds":0}`, true},
		{`{"grace_seconds":-1}`, false},
		{`{"grace_seconds":3601}`, false},
		{`{"grace_seconds":1,"extra":1}`, false},
	} {
		var sb bytes.Buffer
		channel.WriteFrame(&sb, channel.TypeStop, []byte(tc.body))
		m, err := ReadHostMessage(&sb)
		if tc.ok != (err == nil && m.Stop != nil) {
			t.Errorf("STOP %s: %+v %v, want accepted %v", tc.body, m, err, tc.ok)
		}
	}
}

// FuzzReadFrame feeds arbitrary host bytes to the agent's decoder: it must
// never panic, and whatever it accepts must be a valid message.
func FuzzReadFrame(f *testing.F) {
	var b bytes.Buffer
	channel.WriteJSON(&b, channel.TypeStart, channel.Start{SandboxID: "abc", Secrets: []channel.Secret{{Name: "db", Wrapped: []byte("w")}}, Args: []string{"sh"}})
	f.Add(bytes.Clone(b.Bytes())) // b is reused: each seed its own copy
	b.Reset()
	channel.WriteJSON(&b, channel.TypeAbort, channel.Abort{Reason: "policy"})
	f.Add(bytes.Clone(b.Bytes())) // b is reused: each seed its own copy
	b.Reset()
	channel.WriteJSON(&b, channel.TypeStop, channel.Stop{GraceSeconds: 10})
	f.Add(bytes.Clone(b.Bytes())) // b is reused: each seed its own copy
	b.Reset()
	channel.WriteJSON(&b, channel.TypeIdentity, channel.Identity{Entropy: make([]byte, 32), UnixNano: 1, SandboxID: "sb1"})
	f.Add(bytes.Clone(b.Bytes()))
	b.Reset()
	channel.WriteFrame(&b, channel.TypeStdin, []byte("input"))
	f.Add(bytes.Clone(b.Bytes()))
	b.Reset()
	channel.WriteJSON(&b, channel.TypeRevoke, channel.Revoke{Seq: 3, Action: "stop", Names: []string{"db"}, GraceSeconds: 10})
	f.Add(bytes.Clone(b.Bytes()))
	b.Reset()
	channel.WriteJSON(&b, channel.TypeRotate, channel.Rotate{Seq: 4, Secrets: []channel.Secret{{Name: "db", Wrapped: []byte("w")}}})
	f.Add(bytes.Clone(b.Bytes()))
	b.Reset()
	channel.WriteJSON(&b, channel.TypeContainerStart, channel.ContainerStart{Index: 1, Name: "c1",
		DiskDigest: "sha256:" + strings.Repeat("0", 64), DiskSize: 4096, Args: []string{"sh"}, Env: []string{"A=1"}})
	f.Add(bytes.Clone(b.Bytes()))
	b.Reset()
	channel.WriteJSON(&b, channel.TypeContainerKill, channel.ContainerKill{Index: 1, Signal: 15})
	f.Add(bytes.Clone(b.Bytes()))
	b.Reset()
	channel.WriteJSON(&b, channel.TypeResize, channel.WindowSize{Rows: 50, Cols: 132})
	f.Add(bytes.Clone(b.Bytes()))
	b.Reset()
	channel.WriteJSON(&b, channel.TypeStart, channel.Start{SandboxID: "abc", Stdin: true, TTY: &channel.WindowSize{Rows: 24, Cols: 80}})
	f.Add(bytes.Clone(b.Bytes()))
	b.Reset()
	channel.WriteFrame(&b, channel.TypeExecStdin, channel.ExecInput{ID: 2, Data: []byte("in")}.Encode())
	f.Add(bytes.Clone(b.Bytes()))
	b.Reset()
	channel.WriteJSON(&b, channel.TypeExecResize, channel.ExecResize{ID: 2, Rows: 24, Cols: 80})
	f.Add(bytes.Clone(b.Bytes()))
	b.Reset()
	channel.WriteJSON(&b, channel.TypeExec, channel.Exec{ID: 2, Args: []string{"sh"}, Stdin: true, TTY: &channel.WindowSize{Rows: 24, Cols: 80}})
	f.Add(bytes.Clone(b.Bytes()))
	b.Reset()
	channel.WriteJSON(&b, channel.TypeExecSignal, channel.ExecSignal{ID: 2, Signal: 15})
	f.Add(bytes.Clone(b.Bytes()))
	f.Add([]byte{0, 0, 0, 1, 2})
	addContainerInputSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := ReadHostMessage(bytes.NewReader(in))
		if err != nil {
			return
		}
		n := 0
		for _, set := range []bool{m.Identity != nil, m.Start != nil, m.Abort != nil, m.Stop != nil, m.Ping != nil, m.Exec != nil, m.Reattach != nil, m.Stdin != nil, m.Revoke != nil, m.Rotate != nil, m.ContainerStart != nil, m.ContainerKill != nil, m.Resize != nil, m.ExecStdin != nil, m.ExecResize != nil, m.ContainerStdin != nil, m.ContainerResize != nil, m.ExecSignal != nil, m.ContainerRemove != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("accepted %+v", m)
		}
		if m.Stop != nil {
			if err := m.Stop.Validate(); err != nil {
				t.Fatalf("accepted an invalid STOP: %v", err)
			}
		}
		if m.ContainerStart != nil {
			if err := m.ContainerStart.Validate(); err != nil {
				t.Fatalf("accepted an invalid CONTAINER_START: %v", err)
			}
		}
		if m.ContainerKill != nil {
			if err := m.ContainerKill.Validate(); err != nil {
				t.Fatalf("accepted an invalid CONTAINER_KILL: %v", err)
			}
		}
		if m.Resize != nil {
			if err := m.Resize.Validate(); err != nil {
				t.Fatalf("accepted an invalid RESIZE: %v", err)
			}
		}
		if m.ExecResize != nil {
			if err := m.ExecResize.Validate(); err != nil {
				t.Fatalf("accepted an invalid EXEC_RESIZE: %v", err)
			}
		}
		if m.ExecSignal != nil {
			if err := m.ExecSignal.Validate(); err != nil {
				t.Fatalf("accepted an invalid EXEC_SIGNAL: %v", err)
			}
		}
		if m.ExecStdin != nil && (m.ExecStdin.ID == 0 || len(m.ExecStdin.Data) > channel.MaxStdinChunk) {
			t.Fatalf("accepted an invalid EXEC_STDIN: id %d, %d bytes", m.ExecStdin.ID, len(m.ExecStdin.Data))
		}
		if m.Exec != nil {
			if err := m.Exec.Validate(); err != nil {
				t.Fatalf("accepted an invalid EXEC: %v", err)
			}
		}
		checkContainerInput(t, m)
		if m.Start != nil && m.Start.TTY != nil {
			if err := m.Start.TTY.Validate(); err != nil {
				t.Fatalf("accepted a START with an invalid terminal: %v", err)
			}
		}
		if m.Identity != nil {
			if err := m.Identity.Validate(); err != nil {
				t.Fatalf("accepted an invalid IDENTITY: %v", err)
			}
		}
		if m.Revoke != nil {
			if err := m.Revoke.Validate(); err != nil {
				t.Fatalf("accepted an invalid REVOKE: %v", err)
			}
			for _, n := range m.Revoke.Names {
				if strings.Contains(n, "/") || n == ".." {
					t.Fatalf("revoked secret name %q", n)
				}
			}
		}
		if m.Rotate != nil {
			if err := m.Rotate.Validate(); err != nil {
				t.Fatalf("accepted an invalid ROTATE: %v", err)
			}
			for _, s := range m.Rotate.Secrets {
				if strings.Contains(s.Name, "/") || s.Name == ".." {
					t.Fatalf("rotated secret name %q", s.Name)
				}
			}
		}
		if m.Start != nil {
			if err := m.Start.Validate(); err != nil {
				t.Fatalf("accepted an invalid START: %v", err)
			}
			for _, s := range m.Start.Secrets {
				if strings.Contains(s.Name, "/") {
					t.Fatalf("secret name %q", s.Name)
				}
			}
		}
	})
}

func TestMkdirAllInRoot(t *testing.T) {
	outside := t.TempDir()
	root := writeRoot(t, map[string]string{
		"srv/file": "x",
		"link":     "->" + outside, // absolute target: must resolve inside root (where it does not exist)
		"wd":       "->/srv",
	})
	me := Identity{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	if err := MkdirAllInRoot(root, "/a/b/c", me); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(root, "a/b/c")); err != nil || !st.IsDir() {
		t.Fatalf("a/b/c: %v", err)
	}
	if err := MkdirAllInRoot(root, "/link/work", me); err == nil {
		t.Fatal("followed a symlink that does not resolve inside the root")
	}
	if _, err := os.Stat(filepath.Join(outside, "work")); err == nil {
		t.Fatal("created a directory outside the root through a symlink")
	}
	if err := MkdirAllInRoot(root, "/wd/x", me); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(root, "srv/x")); err != nil || !st.IsDir() {
		t.Fatalf("/wd/x was not created as /srv/x: %v", err)
	}
	if err := MkdirAllInRoot(root, "/srv/file/x", me); err == nil {
		t.Fatal("went through a regular file")
	}
}

// TestOverride: START's env replaces the image's variables of the same
// name in place and adds the others after them; working directory and
// user replace the image's only when given.
func TestOverride(t *testing.T) {
	img := channel.ImageConfig{Env: []string{"PATH=/bin", "A=image", "B=image"}, WorkingDir: "/app", User: "app", Cmd: []string{"x"}}
	got := Override(img, &channel.Start{Env: []string{"B=run", "C=run", "B=last"}, WorkingDir: "/srv", User: "1000:1000"})
	if want := "PATH=/bin A=image B=last C=run"; strings.Join(got.Env, " ") != want {
		t.Errorf("env %q, want %q", got.Env, want)
	}
	if got.WorkingDir != "/srv" || got.User != "1000:1000" || got.Cmd[0] != "x" {
		t.Errorf("got %+v", got)
	}
	if got := Override(img, &channel.Start{}); strings.Join(got.Env, " ") != strings.Join(img.Env, " ") || got.WorkingDir != "/app" || got.User != "app" {
		t.Errorf("no override changed the config: %+v", got)
	}
	if strings.Join(img.Env, " ") != "PATH=/bin A=image B=image" {
		t.Errorf("the image's config was modified: %q", img.Env)
	}
}

// TestReadHostMessageContainerFrames: a pod's container frames are
// accepted only when valid.
func TestReadHostMessageContainerFrames(t *testing.T) {
	digest := "sha256:" + strings.Repeat("0", 64)
	for _, tc := range []struct {
		name string
		typ  channel.Type
		v    any
		ok   bool
	}{
		{"start", channel.TypeContainerStart, channel.ContainerStart{Index: 2, Name: "web", DiskDigest: digest, DiskSize: 512}, true},
		{"start without digest", channel.TypeContainerStart, channel.ContainerStart{Index: 2, Name: "web", DiskSize: 512}, false},
		{"start with a bad name", channel.TypeContainerStart, channel.ContainerStart{Index: 2, Name: "../x", DiskDigest: digest, DiskSize: 512}, false},
		{"start with an unknown field", channel.TypeContainerStart, map[string]any{"index": 1, "name": "a", "disk_digest": digest, "disk_size": 512, "root": "/"}, false},
		{"kill", channel.TypeContainerKill, channel.ContainerKill{Index: 1, Signal: 9}, true},
		{"kill with signal 0", channel.TypeContainerKill, channel.ContainerKill{Index: 1}, false},
	} {
		var b bytes.Buffer
		if err := channel.WriteJSON(&b, tc.typ, tc.v); err != nil {
			t.Fatal(err)
		}
		m, err := ReadHostMessage(&b)
		if got := err == nil && (m.ContainerStart != nil || m.ContainerKill != nil); got != tc.ok {
			t.Errorf("%s: %+v %v, want accepted %v", tc.name, m, err, tc.ok)
		}
	}
}
