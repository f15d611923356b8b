package attestdcmd

import (
	"strings"
	"testing"
)

// ctl parses the action's flags and arguments before it dials: --help and
// usage mistakes need no --ca (they used to fail with "no CA certificate:
// give --ca").
func TestCtlParsesBeforeDialling(t *testing.T) {
	cases := []struct {
		name string
		args []string
		code int
		want string // in stdout+stderr
	}{
		{"action --help", []string{"secret", "put", "--help"}, 0, "Usage: attestd ctl [--addr ... --ca ... --cert ... --key ...] secret put NAME"},
		{"action -h", []string{"nodes", "rm", "-h"}, 0, "nodes rm NODE_ID"},
		{"action flags in help", []string{"audit", "--help"}, 0, "-limit"},
		{"missing NAME", []string{"secret", "put"}, 2, "missing NAME"},
		{"missing NAME with a flag", []string{"secret", "put", "--from-file", "x"}, 2, "missing NAME"},
		{"missing NODE_ID", []string{"nodes", "revoke"}, 2, "missing NODE_ID"},
		{"extra argument", []string{"nodes", "x"}, 2, `unexpected argument "x"`},
		{"bad action flag value", []string{"audit", "--limit", "0"}, 2, "--limit 0: want 1..1000"},
		{"unknown action flag", []string{"audit", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{"unknown action", []string{"bogus"}, 2, `unknown action "bogus"`},
		// A well-formed command still needs its CA, after parsing.
		{"no --ca", []string{"--addr", "127.0.0.1:1", "nodes"}, 1, "no CA certificate: give --ca"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := runAttestd(t, "", append([]string{"ctl"}, c.args...)...)
			if code != c.code || !strings.Contains(out+errs, c.want) {
				t.Fatalf("exit %d, want %d with %q:\nstdout: %s\nstderr: %s", code, c.code, c.want, out, errs)
			}
			if c.code != 1 && strings.Contains(out+errs, "no CA certificate") {
				t.Fatalf("dialled before parsing the action:\n%s", errs)
			}
		})
	}
}
