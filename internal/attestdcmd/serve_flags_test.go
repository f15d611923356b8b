package attestdcmd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/cli"
)

// serve refuses usage mistakes with exit 2, naming the flag, before it
// creates anything: no data directory, store, vault directory or CA, and
// nothing in the working directory (a --db that was not a postgres:// URL
// used to become an embedded store in a directory named after the DSN,
// password included).
func TestServeRefusesBadFlags(t *testing.T) {
	const pw = "SuperSecretPW"
	// A vault that needs no TPM, so that a case that wrongly passes the
	// checks fails fast instead of looking for one.
	fileVault := []string{"--vault", "file", "--allow-insecure-file-vault"}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"db key=value", append([]string{"--db", "host=127.0.0.1 user=a password=" + pw + " dbname=b"}, fileVault...), "--db: want a postgres:// or postgresql:// URL"},
		{"db not a URL", append([]string{"--db", "garbage"}, fileVault...), "--db: want a postgres://"},
		{"db other scheme", append([]string{"--db", "mysql://a:" + pw + "@h/b"}, fileVault...), "--db: want a postgres://"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cwd := t.TempDir()
			t.Chdir(cwd)
			data := filepath.Join(t.TempDir(), "data")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var out, errb bytes.Buffer
			env := &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: func(string) string { return "" }}
			args := append([]string{"serve", "--data", data, "--listen", "127.0.0.1:0", "--metrics-addr", ""}, c.args...)
			code := Program.Main(ctx, env, args)
			if code != 2 || !strings.Contains(errb.String(), c.want) {
				t.Fatalf("exit %d, want 2 with %q:\n%s%s", code, c.want, out.String(), errb.String())
			}
			if strings.Contains(out.String()+errb.String(), pw) {
				t.Fatalf("the DSN's password is in the output:\n%s", errb.String())
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Fatalf("the data directory was created: %v %v", err, dirEntries(t, data))
			}
			if got := dirEntries(t, cwd); len(got) != 0 {
				t.Fatalf("created %v in the working directory", got)
			}
		})
	}
}
