package attestdcmd

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/pki"
)

// admin-cert and client-cert need the CA that serve created (or an
// explicit --init-ca), refuse to replace NAME.crt/NAME.key without
// --force, refuse the name "ca" (its files would collide with ca.crt), and
// create no CA when they then fail.
func TestIssueCertRefusals(t *testing.T) {
	type dirs struct{ data, out, base string }
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	read := func(t *testing.T, p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name  string
		pre   func(t *testing.T, d dirs) // runs after the CA exists in d.data
		args  func(d dirs) []string
		code  int
		want  string
		check func(t *testing.T, d dirs)
	}{
		{
			name: "admin cert",
			args: func(d dirs) []string { return []string{"admin-cert", "--data", d.data, "--name", "alice", "-o", d.out} },
			want: "CA SHA-256:",
			check: func(t *testing.T, d dirs) {
				for _, f := range []string{"alice.crt", "alice.key", "ca.crt"} {
					if !exists(filepath.Join(d.out, f)) {
						t.Errorf("%s missing", f)
					}
				}
			},
		},
		{
			name: "second run keeps the key",
			pre: func(t *testing.T, d dirs) {
				if code, _, errs := runAttestd(t, "", "admin-cert", "--data", d.data, "--name", "alice", "-o", d.out); code != 0 {
					t.Fatal(errs)
				}
				os.WriteFile(filepath.Join(d.base, "key-before"), read(t, filepath.Join(d.out, "alice.key")), 0o600)
			},
			args: func(d dirs) []string { return []string{"admin-cert", "--data", d.data, "--name", "alice", "-o", d.out} },
			code: 1, want: "alice.crt already exists: refusing to overwrite it (use --force",
			check: func(t *testing.T, d dirs) {
				if !bytes.Equal(read(t, filepath.Join(d.base, "key-before")), read(t, filepath.Join(d.out, "alice.key"))) {
					t.Error("alice.key was replaced")
				}
			},
		},
		{
			name: "client cert crt exists",
			pre: func(t *testing.T, d dirs) {
				os.MkdirAll(d.out, 0o700)
				os.WriteFile(filepath.Join(d.out, "host1.crt"), []byte("keep"), 0o644)
			},
			args: func(d dirs) []string {
				return []string{"client-cert", "--data", d.data, "--name", "host1", "-o", d.out}
			},
			code: 1, want: "host1.crt already exists",
			check: func(t *testing.T, d dirs) {
				if exists(filepath.Join(d.out, "host1.key")) {
					t.Error("host1.key written")
				}
			},
		},
		{
			name: "force replaces",
			pre: func(t *testing.T, d dirs) {
				if code, _, errs := runAttestd(t, "", "admin-cert", "--data", d.data, "--name", "alice", "-o", d.out); code != 0 {
					t.Fatal(errs)
				}
				os.WriteFile(filepath.Join(d.base, "key-before"), read(t, filepath.Join(d.out, "alice.key")), 0o600)
			},
			args: func(d dirs) []string {
				return []string{"admin-cert", "--data", d.data, "--name", "alice", "-o", d.out, "--force"}
			},
			want: "CA SHA-256:",
			check: func(t *testing.T, d dirs) {
				if bytes.Equal(read(t, filepath.Join(d.base, "key-before")), read(t, filepath.Join(d.out, "alice.key"))) {
					t.Error("--force did not replace alice.key")
				}
			},
		},
		{
			name: "another CA's ca.crt in -o",
			pre: func(t *testing.T, d dirs) {
				other := filepath.Join(d.base, "other")
				if _, _, err := pki.LoadOrCreate(other, nil, nil); err != nil {
					t.Fatal(err)
				}
				os.MkdirAll(d.out, 0o700)
				os.WriteFile(filepath.Join(d.out, "ca.crt"), read(t, filepath.Join(other, "tls", "ca.crt")), 0o644)
			},
			args: func(d dirs) []string { return []string{"admin-cert", "--data", d.data, "--name", "bob", "-o", d.out} },
			code: 1, want: "is not this attestd's CA certificate",
		},
		{
			name: "name ca",
			args: func(d dirs) []string { return []string{"admin-cert", "--data", d.data, "--name", "ca", "-o", d.out} },
			code: 2, want: "--name: name \"ca\": ca.crt and ca.key would collide",
		},
		{
			name: "name CA",
			args: func(d dirs) []string { return []string{"client-cert", "--data", d.data, "--name", "CA", "-o", d.out} },
			code: 2, want: "--name: name \"CA\"",
		},
		{
			name: "bad name",
			args: func(d dirs) []string { return []string{"admin-cert", "--data", d.data, "--name", "../x", "-o", d.out} },
			code: 2, want: "--name",
		},
		{
			name: "-o is the CA directory",
			args: func(d dirs) []string {
				return []string{"admin-cert", "--data", d.data, "--name", "server", "-o", filepath.Join(d.data, "tls"), "--force"}
			},
			code: 2, want: "is the CA's own directory",
		},
		{
			name: "wrong data",
			args: func(d dirs) []string {
				return []string{"admin-cert", "--data", filepath.Join(d.base, "typo"), "--name", "alice", "-o", d.out}
			},
			code: 1, want: "no attestd CA at " + "TYPO/tls/ca.crt: is --data right?",
			check: func(t *testing.T, d dirs) {
				if exists(filepath.Join(d.base, "typo")) {
					t.Error("--data directory created")
				}
			},
		},
		{
			name: "init-ca",
			args: func(d dirs) []string {
				return []string{"admin-cert", "--data", filepath.Join(d.base, "new"), "--name", "alice", "-o", d.out, "--init-ca"}
			},
			want: "CA SHA-256:",
			check: func(t *testing.T, d dirs) {
				if !exists(filepath.Join(d.base, "new", "tls", "ca.key")) || !exists(filepath.Join(d.out, "alice.key")) {
					t.Error("--init-ca did not create the CA and the certificate")
				}
			},
		},
		{
			name: "init-ca and -o a file",
			pre:  func(t *testing.T, d dirs) { os.WriteFile(d.out, []byte("x"), 0o600) },
			args: func(d dirs) []string {
				return []string{"admin-cert", "--data", filepath.Join(d.base, "new"), "--name", "alice", "-o", d.out, "--init-ca"}
			},
			code: 2, want: "is not a directory",
			check: func(t *testing.T, d dirs) {
				if exists(filepath.Join(d.base, "new")) {
					t.Error("CA created although the command failed")
				}
			},
		},
		{
			name: "init-ca and -o under a file",
			pre:  func(t *testing.T, d dirs) { os.WriteFile(filepath.Join(d.base, "file"), []byte("x"), 0o600) },
			args: func(d dirs) []string {
				return []string{"admin-cert", "--data", filepath.Join(d.base, "new"), "--name", "alice", "-o", filepath.Join(d.base, "file", "out"), "--init-ca"}
			},
			code: 1, want: "-o:",
			check: func(t *testing.T, d dirs) {
				if exists(filepath.Join(d.base, "new")) {
					t.Error("CA created although the command failed")
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			d := dirs{data: filepath.Join(base, "data"), out: filepath.Join(base, "out"), base: base}
			if _, _, err := pki.LoadOrCreate(d.data, nil, nil); err != nil {
				t.Fatal(err)
			}
			if c.pre != nil {
				c.pre(t, d)
			}
			code, out, errs := runAttestd(t, "", c.args(d)...)
			want := strings.ReplaceAll(c.want, "TYPO", filepath.Join(base, "typo"))
			if code != c.code || !strings.Contains(out+errs, want) {
				t.Fatalf("exit %d, want %d with %q:\n%s%s", code, c.code, want, out, errs)
			}
			if c.check != nil {
				c.check(t, d)
			}
			if c.code != 0 && strings.Contains(c.name, "name") && len(dirEntries(t, d.out)) != 0 {
				t.Fatalf("-o has %v after a refusal", dirEntries(t, d.out))
			}
		})
	}
}
