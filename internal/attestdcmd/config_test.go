package attestdcmd

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/cli"
)

func TestApplyConfig(t *testing.T) {
	newFS := func() (*flag.FlagSet, *string, *int, *bool, *cli.Strings) {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		listen := fs.String("listen", ":8443", "")
		conns := fs.Int("max-conns", 10, "")
		insecure := fs.Bool("insecure", false, "")
		var cas cli.Strings
		fs.Var(&cas, "ek-ca", "")
		fs.String("config", "", "")
		return fs, listen, conns, insecure, &cas
	}
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "attestd.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Values from the file; the command line wins; lists for a repeatable flag.
	fs, listen, conns, insecure, cas := newFS()
	if err := fs.Parse([]string{"--max-conns", "99"}); err != nil {
		t.Fatal(err)
	}
	cfg := write("# attestd\nlisten: 127.0.0.1:9443\nmax-conns: 5\ninsecure: true\nek-ca: [a.pem, b.pem]\n")
	if err := applyConfig(fs, cfg); err != nil {
		t.Fatal(err)
	}
	if *listen != "127.0.0.1:9443" || *conns != 99 || !*insecure || strings.Join(*cas, ",") != "a.pem,b.pem" {
		t.Fatalf("listen %q conns %d insecure %v ek-ca %v", *listen, *conns, *insecure, *cas)
	}

	for _, tc := range []struct{ name, body, want string }{
		{"unknown setting", "listen: :1\nlisten-addr: :2\n", `attestd.yaml:2: unknown setting "listen-addr"`},
		{"config itself", "config: other.yaml\n", `attestd.yaml:1: unknown setting "config"`},
		{"set twice", "listen: :1\nlisten: :2\n", `attestd.yaml:2: "listen" is set twice (first at line 1)`},
		{"a list for one value", "listen: [a, b]\n", "attestd.yaml:1: listen takes one value, not a list"},
		{"a mapping", "listen: {a: b}\n", "attestd.yaml:1: listen: want a value or a list of values"},
		{"a value the flag refuses", "max-conns: lots\n", `attestd.yaml:1: max-conns "lots"`},
		{"not a mapping", "- listen\n", "attestd.yaml:1: want a mapping"},
		{"an empty value", "listen:\n", "attestd.yaml:1: listen: want a plain value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, _, _, _, _ := newFS()
			fs.Parse(nil)
			err := applyConfig(fs, write(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	fs, _, _, _, _ = newFS()
	if err := applyConfig(fs, filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("missing file: %v", err)
	}
}

// TestServeConfigIsChecked: settings from --config go through serve's own
// checks (exit 2 before anything is created).
func TestServeConfigIsChecked(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "attestd.yaml")
	os.WriteFile(cfg, []byte("data: "+filepath.Join(dir, "data")+"\nmax-conns: 0\n"), 0o600)
	code, out, errs := runAttestd(t, "", "serve", "--config", cfg)
	if code != 2 || !strings.Contains(out+errs, "--max-conns 0: want at least 1") {
		t.Fatalf("exit %d:\n%s%s", code, out, errs)
	}
	if ents := dirEntries(t, filepath.Join(dir, "data")); len(ents) != 0 {
		t.Fatalf("a refused config created %v", ents)
	}
}
