package launchercmd

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestAttestdAddress: --attestd (or BULWARK_ATTESTD) must be HOST:PORT; any
// other value is a usage error naming --attestd, found before the TPM is
// opened or attestd dialled, in every command that takes it.
func TestAttestdAddress(t *testing.T) {
	dir := t.TempDir()
	tpmSpec := "tcp:127.0.0.1:1" // nothing listens: fails if the command got that far
	for _, tc := range []struct {
		name, addr, env string
		code            int
		want            string
	}{
		{"no port", "nohostport", "", 2, `--attestd "nohostport": want HOST:PORT, e.g. localhost:8443`},
		{"no host", ":8443", "", 2, `--attestd ":8443": no host`},
		{"empty port", "host:", "", 2, `port "": want a number 1..65535`},
		{"named port", "host:https", "", 2, `port "https": want a number 1..65535`},
		{"port 0", "host:0", "", 2, `port "0"`},
		{"port too big", "host:65536", "", 2, `port "65536"`},
		{"IPv6 without brackets", "::1", "", 2, "want HOST:PORT"},
		{"from the environment", "", "nohostport", 2, `--attestd "nohostport" (from BULWARK_ATTESTD): want HOST:PORT`},
		{"host and port", "localhost:8443", "", 1, ""},
		{"IPv6 with brackets", "[::1]:8443", "", 1, ""},
	} {
		for _, cmd := range [][]string{{"enroll"}, {"run", "--policy", "p", "--image", dir}} {
			t.Run(tc.name+"/"+cmd[0], func(t *testing.T) {
				args := append(cmd, "--insecure", "--tpm", tpmSpec)
				if tc.addr != "" {
					args = append(args, "--attestd", tc.addr)
				}
				if cmd[0] == "run" {
					args = append(args, "--kernel", filepath.Join(dir, "missing"), "--initrd", filepath.Join(dir, "missing"))
				}
				env := map[string]string{"BULWARK_ATTESTD": tc.env, "BULWARK_STATE": filepath.Join(dir, "state")}
				_, stderr, code := runLauncher(t, env, args...)
				if tc.code == 2 {
					if code != 2 || !strings.Contains(stderr, tc.want) {
						t.Fatalf("exit %d, want 2; stderr %q, want it to contain %q", code, stderr, tc.want)
					}
					return
				}
				// A good address passes validation: the command then fails
				// on what it does next (no TPM, no kernel), not on --attestd.
				if code == 0 || code == 2 || strings.Contains(stderr, "--attestd") {
					t.Fatalf("exit %d; stderr %q", code, stderr)
				}
			})
		}
	}
}
