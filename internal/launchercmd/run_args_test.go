package launchercmd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunValidatesFlagsFirst: bad values for run's flags are usage errors
// (exit 2) found before anything is opened, measured or booted, and write no
// --report (the launch never started). Values at the limits pass
// validation: that launch then fails on the missing kernel, as a launch
// (exit 125, with the report).
func TestRunValidatesFlagsFirst(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"BULWARK_STATE": filepath.Join(dir, "state")}
	envFile, goodEnvFile := filepath.Join(dir, "bad.env"), filepath.Join(dir, "good.env")
	if err := os.WriteFile(envFile, []byte("# comment\nA=1\nnot a key=2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goodEnvFile, []byte("# comment\n\nA=from-file\nB=x=y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name  string
		flags []string
		code  int
		want  string
	}{
		{"unknown accelerator", []string{"--accel", "bogus"}, 2, `--accel "bogus": want auto, kvm or tcg`},
		{"empty accelerator", []string{"--accel", ""}, 2, `--accel "": want auto, kvm or tcg`},
		{"negative cpus", []string{"--cpus", "-3"}, 2, "--cpus -3: want 1..64"},
		{"zero cpus", []string{"--cpus", "0"}, 2, "--cpus 0: want 1..64"},
		{"too many cpus", []string{"--cpus", "65"}, 2, "--cpus 65: want 1..64"},
		{"negative memory", []string{"--memory", "-1"}, 2, "--memory -1: want 128..1048576 MiB"},
		{"too little memory", []string{"--memory", "127"}, 2, "--memory 127: want 128..1048576 MiB"},
		{"PCR 99", []string{"--pcr", "99"}, 2, "--pcr 99: want 1..23"},
		{"PCR 24", []string{"--pcr", "24"}, 2, "--pcr 24: want 1..23"},
		{"PCR 0 (not silently 13)", []string{"--pcr", "0"}, 2, "--pcr 0: want 1..23, the same PCR as attestd's --launch-pcr"},
		{"negative PCR", []string{"--pcr", "-1"}, 2, "--pcr -1: want 1..23"},
		{"negative boot timeout", []string{"--boot-timeout", "-1s"}, 2, "--boot-timeout -1s: want a positive duration"},
		{"zero boot timeout", []string{"--boot-timeout", "0"}, 2, "--boot-timeout 0s: want a positive duration"},
		{"cmdline smuggling a parameter", []string{"--cmdline", "console=ttyS0 loglevel=8\u00a0kprobe_event=p:vfs_write"}, 2, `--cmdline: kernel command line byte 24 is "\xc2": only printable ASCII`},
		{"cmdline with a tab", []string{"--cmdline", "console=ttyS0\tinit=/bin/sh"}, 2, `--cmdline: kernel command line byte 13 is "\t": the kernel splits parameters on it`},
		{"cmdline with quotes", []string{"--cmdline", `console=ttyS0 x="a init=/bin/sh"`}, 2, `--cmdline: kernel command line byte 16 is "\""`},
		{"zero stop timeout", []string{"--stop-timeout", "0s"}, 2, "--stop-timeout 0s: want a positive duration up to 1h0m0s"},
		{"stop timeout past an hour", []string{"--stop-timeout", "61m"}, 2, "--stop-timeout 1h1m0s: want a positive duration"},
		{"env without =", []string{"-e", "=x"}, 2, `-e/--env: empty variable name`},
		{"env key with a space", []string{"--env", "A B=1"}, 2, `-e/--env: variable name "A B"`},
		{"env value with NUL", []string{"-e", "A=\x00"}, 2, "-e/--env A: value contains a NUL byte"},
		{"env value too large", []string{"-e", "A=" + strings.Repeat("x", 8193)}, 2, "-e/--env A: value of 8193 bytes, the limit is 8192"},
		{"missing env file", []string{"--env-file", "/nonexistent/env"}, 2, "--env-file open /nonexistent/env: no such file or directory"},
		{"env file with a bad line", []string{"--env-file", envFile}, 2, "--env-file " + envFile + ":3: want KEY=VALUE"},
		{"relative workdir", []string{"-w", "srv"}, 2, `-w/--workdir: "srv" is not an absolute, clean path (want e.g. "/srv")`},
		{"unclean workdir", []string{"--workdir", "/srv/../etc"}, 2, `-w/--workdir: "/srv/../etc" is not an absolute, clean path`},
		{"user with a slash", []string{"--user", "a/b"}, 2, `--user: user "a/b"`},
		{"uid too large", []string{"-u", "4294967295"}, 2, `--user: user "4294967295": "4294967295" is not a number`},
		{"empty group", []string{"--user", "app:"}, 2, `--user: group in "app:"`},
		{"unknown network", []string{"--net", "bridge"}, 2, `--net "bridge": want none, user or tap`},
		{"tap network", []string{"--net", "tap"}, 2, "--net tap: needs the pod's network namespace"},
		{"port without network", []string{"-p", "8080:80"}, 2, "-p/--publish: port forwards need --net user"},
		{"udp port", []string{"--net", "user", "-p", "53:53/udp"}, 2, `-p/--publish: "53:53/udp": protocol "udp"; only tcp is forwarded`},
		{"port out of range", []string{"--net", "user", "--publish", "70000:80"}, 2, `-p/--publish: "70000:80": port "70000" is not a number 0..65535`},
		{"host port twice", []string{"--net", "user", "-p", "8080:80", "-p", "0.0.0.0:8080:81"}, 2, "-p/--publish: host address 0.0.0.0:8080 forwarded twice"},
		{"network with a named template (a network template's clone)", []string{"--accel", "tcg", "--net", "user", "--template", "web"}, ExitLaunchFailed, "kernel: "},
		{"volume without :ro", []string{"--volume", "/srv:/data"}, 2, `--volume "/srv:/data": only read-only volumes`},
		{"rw volume", []string{"--volume", "/srv:/data:rw"}, 2, "only read-only volumes (HOSTDIR:PATH:ro)"},
		{"relative host dir", []string{"--volume", "srv:/data:ro"}, 2, "the host directory must be an absolute path"},
		{"volume at /proc", []string{"--volume", "/srv:/proc/x:ro"}, 2, `--volume: "/proc/x" is in /proc, which the sandbox provides`},
		{"volume over the secrets", []string{"--volume", "/srv:/run/secrets:ro"}, 2, "which the sandbox provides"},
		{"volume at the root", []string{"--volume", "/srv:/:ro"}, 2, "--volume: the root itself cannot be a volume"},
		{"volume with a named template", []string{"--volume", "/srv:/data:ro", "--template", "web"}, 2, `--volume with --template "web": a clone has no disk slot`},
		{"too many volumes", []string{"--volume", "/a:/1:ro", "--volume", "/a:/2:ro", "--volume", "/a:/3:ro", "--volume", "/a:/4:ro", "--volume", "/a:/5:ro",
			"--volume", "/a:/6:ro", "--volume", "/a:/7:ro", "--volume", "/a:/8:ro", "--volume", "/a:/9:ro"}, 2, "--volume: 9 volumes, the limit is 8"},
		{"tmpfs with options", []string{"--tmpfs", "/scratch:mode=1777"}, 2, `--tmpfs "/scratch:mode=1777": want PATH or PATH:size=N`},
		{"tmpfs size zero", []string{"--tmpfs", "/scratch:size=0"}, 2, "size must be 1 byte to 1 TiB"},
		{"tmpfs too large", []string{"--tmpfs", "/scratch:size=2000g"}, 2, "size must be 1 byte to 1 TiB"},
		{"tmpfs relative", []string{"--tmpfs", "scratch"}, 2, `--tmpfs: "scratch" is not an absolute, clean path`},
		{"tmpfs over a volume", []string{"--volume", "/srv:/data:ro", "--tmpfs", "/data"}, 2, "--tmpfs: /data mounted twice"},
		{"scratch too small", []string{"--scratch", "/data:size=8m"}, 2, `--scratch "/data:size=8m": size 8388608: a scratch disk is 16m to 1024g, a whole number of MiB`},
		{"scratch too large", []string{"--scratch", "/data:size=2t"}, 2, "a scratch disk is 16m to 1024g"},
		{"scratch with options", []string{"--scratch", "/data:rw"}, 2, `--scratch "/data:rw": want PATH or PATH:size=N`},
		{"scratch relative", []string{"--scratch", "data"}, 2, `--scratch: "data" is not an absolute, clean path`},
		{"scratch with ..", []string{"--scratch", "/data/../usr"}, 2, `--scratch: "/data/../usr" is not an absolute, clean path`},
		{"scratch over /usr", []string{"--scratch", "/usr"}, 2, `--scratch: "/usr" is a system directory`},
		{"scratch over the secrets", []string{"--scratch", "/run/secrets/x"}, 2, "--scratch: \"/run/secrets/x\" is in /run/secrets"},
		{"scratch over a tmpfs", []string{"--tmpfs", "/data", "--scratch", "/data"}, 2, "--scratch: /data mounted twice"},
		{"too many scratch disks", []string{"--scratch", "/1", "--scratch", "/2", "--scratch", "/3", "--scratch", "/4", "--scratch", "/5"}, 2, "--scratch: 5 scratch disks, the limit is 4"},
		{"tty with input that is no terminal", []string{"-i", "-t"}, 2, "-t with -i: stdin is not a terminal (drop -t to pipe input into the workload)"},
		{"tty without input or terminal", []string{"--accel", "tcg", "-t"}, ExitLaunchFailed, "kernel: "},
		{"workload inputs at the limits", []string{"--accel", "tcg", "-e", "A=" + strings.Repeat("x", 8192), "--env-file", goodEnvFile, "-w", "/srv",
			"--user", "4294967294:0", "--net", "user", "-p", "127.0.0.1:65535:1", "-p", "80"}, ExitLaunchFailed, "kernel: "},
		{"values at the limits", []string{"--accel", "tcg", "--cpus", "64", "--memory", "128", "--pcr", "23", "--boot-timeout", "1ns"}, ExitLaunchFailed, "kernel: "},
		{"lowest PCR", []string{"--accel", "tcg", "--cpus", "1", "--pcr", "1"}, ExitLaunchFailed, "kernel: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			report := filepath.Join(dir, "report"+string(rune('a'+i))+".json")
			args := append([]string{"run", "-v", // -v: progress would show a launch that started
				"--attestd", "127.0.0.1:1", "--insecure", "--policy", "p", "--image", filepath.Join(dir, "image"),
				"--kernel", filepath.Join(dir, "missing-vmlinux"), "--initrd", filepath.Join(dir, "missing.cpio"),
				"--report", report}, tc.flags...)
			_, stderr, code := runLauncher(t, env, args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, want %d; stderr %q, want it to contain %q", code, tc.code, stderr, tc.want)
			}
			b, err := os.ReadFile(report)
			if tc.code == 2 {
				if strings.Contains(stderr, "accelerator") || strings.Contains(stderr, "measuring") {
					t.Errorf("the launch started: %s", stderr)
				}
				if err == nil {
					t.Errorf("a usage error wrote --report: %s", b)
				}
				return
			}
			var r runReport
			if err != nil || json.Unmarshal(b, &r) != nil || r.ExitCode != ExitLaunchFailed || !strings.Contains(r.Error, tc.want) {
				t.Errorf("--report: %v, %s", err, b)
			}
		})
	}
}

// TestRunMissingInputIsALaunchFailure: an input file the launch reads that
// cannot be used (a --signer key as much as the --image) fails the launch:
// exit 125, with the reason in the --report file and on stderr.
func TestRunMissingInputIsALaunchFailure(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"BULWARK_STATE": filepath.Join(dir, "state")}
	kernel, initrd, junk := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "base.cpio"), filepath.Join(dir, "junk.pub")
	for _, f := range []string{kernel, initrd, junk} {
		if err := os.WriteFile(f, []byte("not what it should be"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing")
	for i, tc := range []struct {
		name  string
		flags []string
		want  string
	}{
		{"missing signer", []string{"--signer", missing}, "--signer: signer key: stat " + missing + ": no such file or directory"},
		{"signer is not a key", []string{"--signer", junk}, "--signer: signer key " + junk},
		{"signer is a directory", []string{"--signer", dir}, "--signer: signer key"},
		{"missing image", []string{"--image", missing}, "image " + missing + ": stat"},
		{"missing kernel", []string{"--kernel", missing}, "kernel: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			report := filepath.Join(dir, "report"+string(rune('a'+i))+".json")
			args := append([]string{"run", "--attestd", "127.0.0.1:1", "--insecure", "--policy", "p", "--accel", "tcg",
				"--image", filepath.Join(dir, "image"), "--kernel", kernel, "--initrd", initrd, "--report", report}, tc.flags...)
			_, stderr, code := runLauncher(t, env, args...)
			if code != ExitLaunchFailed || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, want %d; stderr %q, want it to contain %q", code, ExitLaunchFailed, stderr, tc.want)
			}
			if strings.Contains(stderr, "image: image") {
				t.Errorf("stderr repeats the image prefix: %q", stderr)
			}
			b, err := os.ReadFile(report)
			var r runReport
			if err != nil || json.Unmarshal(b, &r) != nil || r.ExitCode != ExitLaunchFailed || !strings.Contains(r.Error, tc.want) {
				t.Errorf("--report: %v, %s", err, b)
			}
		})
	}
}

// TestRunConsolePath: a --console path that cannot be written stops run
// before the launch (exit 1, like an unwritable --report), naming --console.
func TestRunConsolePath(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"BULWARK_STATE": filepath.Join(dir, "state")}
	for _, tc := range []struct {
		name, console, want string
	}{
		{"directory", dir, "--console: open " + dir + ": is a directory"},
		{"missing directory", filepath.Join(dir, "missing", "console.log"), "--console: open " + filepath.Join(dir, "missing", "console.log") + ": no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := runLauncher(t, env, "run", "-v", "--attestd", "127.0.0.1:1", "--insecure", "--policy", "p",
				"--image", filepath.Join(dir, "image"), "--console", tc.console)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, want 1; stderr %q, want it to contain %q", code, stderr, tc.want)
			}
			if strings.Contains(stderr, "accelerator") || strings.Contains(stderr, "measuring") {
				t.Errorf("the launch started: %s", stderr)
			}
		})
	}
}

// TestEnvFile: an env file's KEY=VALUE lines are taken verbatim (no quote
// removal, '=' in values kept), comments and blank lines skipped, a bare
// KEY takes the launcher's value and is left out when unset.
func TestEnvFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(p, []byte("# c\n\n  # indented comment\nA=\"quoted\"\nB=x=y\r\nHOME\nUNSET\nC=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string { return map[string]string{"HOME": "/root"}[k] }
	got, err := readEnvFile(p, getenv)
	if want := []string{`A="quoted"`, "B=x=y", "HOME=/root", "C="}; err != nil || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("readEnvFile = %q, %v; want %q", got, err, want)
	}
	if err := os.WriteFile(p, []byte("A=1\nB=\x00\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readEnvFile(p, getenv); err == nil || !strings.Contains(err.Error(), p+":2: not UTF-8 text without NUL bytes") {
		t.Fatalf("NUL: %v", err)
	}
	if err := os.WriteFile(p, make([]byte, maxEnvFile+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readEnvFile(p, getenv); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("large file: %v", err)
	}
}
