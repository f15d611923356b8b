package attestdcmd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/attestdcmd"
	"github.com/bulwark-project/bulwark/internal/attestdtest"
	"github.com/bulwark-project/bulwark/internal/cli"
)

func run(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	env := &cli.Env{Stdout: &out, Stderr: &out, Stdin: strings.NewReader(""), Getenv: func(string) string { return "" }}
	code := attestdcmd.Program.Main(context.Background(), env, args)
	return code, out.String()
}

// adminCert issues an admin certificate "alice" from data's CA (creating
// the CA when init) and returns its directory.
func adminCert(t *testing.T, data string, init bool) string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"admin-cert", "--data", data, "--name", "alice", "-o", dir}
	if init {
		args = append(args, "--init-ca")
	}
	if code, out := run(t, args...); code != 0 {
		t.Fatalf("admin-cert: %s", out)
	}
	return dir
}

// A wrong --ca, or an admin certificate that another CA issued, say what
// is wrong and what to do, through ctl against a real attestd over TLS.
// They used to print "x509: certificate signed by unknown authority" and,
// by timing, "Unavailable ... broken pipe" or a bare TLS alert.
func TestCtlExplainsTLSMistakes(t *testing.T) {
	srv := attestdtest.Start(t)
	good := adminCert(t, srv.Data, false)
	otherData := filepath.Join(t.TempDir(), "other")
	other := adminCert(t, otherData, true)
	cases := []struct {
		name     string
		ca, cert string // directories holding ca.crt / alice.crt+key
		code     int
		want     []string
	}{
		{"good", good, good, 0, []string{"NODE"}},
		{"CA of another attestd", other, good, 1, []string{
			"attestd's server certificate at " + srv.Addr + " is not signed by the CA in " + filepath.Join(other, "ca.crt"),
			"DATA/tls/ca.crt"}},
		{"admin certificate of another CA", good, other, 1, []string{
			"attestd refused the client certificate " + filepath.Join(other, "alice.crt"),
			"it is not issued by attestd's CA", "attestd admin-cert"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := run(t, "ctl", "--addr", srv.Addr, "--server-name", "localhost", "--ca", filepath.Join(c.ca, "ca.crt"),
				"--cert", filepath.Join(c.cert, "alice.crt"), "--key", filepath.Join(c.cert, "alice.key"), "nodes")
			if code != c.code {
				t.Fatalf("exit %d, want %d:\n%s", code, c.code, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, bad := range []string{"x509:", "broken pipe", "remote error"} {
				if c.code != 0 && strings.Contains(out, bad) {
					t.Errorf("output has the raw %q:\n%s", bad, out)
				}
			}
		})
	}
}

// The list actions print attestd's answer as JSON with --json, with the
// API's field names, for scripts; the tables stay the default.
func TestCtlJSON(t *testing.T) {
	srv := attestdtest.Start(t)
	adm := adminCert(t, srv.Data, false)
	ctl := func(args ...string) string {
		t.Helper()
		code, out := run(t, append([]string{"ctl", "--addr", srv.Addr, "--server-name", "localhost", "--ca", filepath.Join(adm, "ca.crt"),
			"--cert", filepath.Join(adm, "alice.crt"), "--key", filepath.Join(adm, "alice.key")}, args...)...)
		if code != 0 {
			t.Fatalf("ctl %q: exit %d:\n%s", args, code, out)
		}
		return out
	}
	val := filepath.Join(t.TempDir(), "v")
	if err := os.WriteFile(val, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctl("secret", "put", "db-password", "--from-file", val, "--description", "the db")
	for _, tc := range []struct {
		args  []string
		check func(m map[string]any) bool
	}{
		{[]string{"secret", "list", "--json"}, func(m map[string]any) bool {
			s, _ := m["secrets"].([]any)
			e, _ := s[0].(map[string]any)
			return len(s) == 1 && e["name"] == "db-password" && e["updated_at"] != nil
		}},
		{[]string{"nodes", "--json"}, func(m map[string]any) bool { return len(m["nodes"].([]any)) == 0 }},
		{[]string{"policies", "--json"}, func(m map[string]any) bool { _, ok := m["policies"].([]any); return ok && m["loaded_at"] != nil }},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out := ctl(tc.args...)
			var m map[string]any
			if err := json.Unmarshal([]byte(out), &m); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("unexpected shape: %v\n%s", r, out)
					}
				}()
				if !tc.check(m) {
					t.Fatalf("unexpected content:\n%s", out)
				}
			}()
			if strings.Contains(out, "s3cret") {
				t.Fatal("a secret value in the listing")
			}
		})
	}
}

// TestCtlConnectionFromEnv: ATTESTD_ADDR, ATTESTD_CA, ATTESTD_CERT and
// ATTESTD_KEY stand in for the four connection flags, and a flag given
// still wins over its variable.
func TestCtlConnectionFromEnv(t *testing.T) {
	srv := attestdtest.Start(t)
	adm := adminCert(t, srv.Data, false)
	vars := map[string]string{
		"ATTESTD_ADDR": srv.Addr,
		"ATTESTD_CA":   filepath.Join(adm, "ca.crt"),
		"ATTESTD_CERT": filepath.Join(adm, "alice.crt"),
		"ATTESTD_KEY":  filepath.Join(adm, "alice.key"),
	}
	runEnv := func(args ...string) (int, string) {
		var out bytes.Buffer
		env := &cli.Env{Stdout: &out, Stderr: &out, Stdin: strings.NewReader(""), Getenv: func(k string) string { return vars[k] }}
		return attestdcmd.Program.Main(context.Background(), env, args), out.String()
	}
	if code, out := runEnv("ctl", "--server-name", "localhost", "nodes", "--json"); code != 0 || !strings.Contains(out, `"nodes"`) {
		t.Fatalf("ctl with its connection from the environment: exit %d:\n%s", code, out)
	}
	// The flag wins: a bad --addr is refused even with ATTESTD_ADDR set.
	if code, out := runEnv("ctl", "--addr", "nohostport", "nodes"); code != 2 || !strings.Contains(out, `--addr "nohostport": want HOST:PORT`) {
		t.Fatalf("--addr over ATTESTD_ADDR: exit %d:\n%s", code, out)
	}
	// And a bad variable is named like its flag.
	vars["ATTESTD_ADDR"] = "nohostport"
	if code, out := runEnv("ctl", "nodes"); code != 2 || !strings.Contains(out, `--addr "nohostport"`) {
		t.Fatalf("a bad ATTESTD_ADDR: exit %d:\n%s", code, out)
	}
}
