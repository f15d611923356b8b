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
// password included; --vault bogus created DATA/store and DATA/vault, and
// --nonce-ttl -1s failed with exit 1, without naming the flag, after the
// CA was created).
func TestServeRefusesBadFlags(t *testing.T) {
	const pw = "SuperSecretPW"
	// A vault that needs no TPM, so that a case that wrongly passes the
	// checks fails fast instead of looking for one.
	fileVault := []string{"--vault", "file", "--allow-insecure-file-vault"}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	cfgDir := t.TempDir()
	shortCfg, badCfg := filepath.Join(cfgDir, "short.yaml"), filepath.Join(cfgDir, "bad.yaml")
	if err := os.WriteFile(shortCfg, []byte("retention: 1s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(badCfg, []byte("vault: file\nretention: 10 days\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"db key=value", append([]string{"--db", "host=127.0.0.1 user=a password=" + pw + " dbname=b"}, fileVault...), 2, "--db: want a postgres:// or postgresql:// URL"},
		{"db not a URL", append([]string{"--db", "garbage"}, fileVault...), 2, "--db: want a postgres://"},
		{"db other scheme", append([]string{"--db", "mysql://a:" + pw + "@h/b"}, fileVault...), 2, "--db: want a postgres://"},
		{"unknown vault", []string{"--vault", "bogus"}, 2, `--vault "bogus": want tpm, sgx or file`},
		{"file vault without its flag", []string{"--vault", "file"}, 2, "add --allow-insecure-file-vault"},
		{"negative nonce TTL", append([]string{"--nonce-ttl", "-1s"}, fileVault...), 2, "--nonce-ttl -1s: want a positive duration"},
		{"zero nonce TTL", append([]string{"--nonce-ttl", "0"}, fileVault...), 2, "--nonce-ttl 0s: want a positive duration"},
		{"negative challenge TTL", append([]string{"--challenge-ttl", "-5m"}, fileVault...), 2, "--challenge-ttl -5m0s: want a positive duration"},
		{"zero token TTL", append([]string{"--token-ttl", "0s"}, fileVault...), 2, "--token-ttl 0s: want a positive duration"},
		{"negative request timeout", append([]string{"--request-timeout", "-1s"}, fileVault...), 2, "--request-timeout -1s: want a positive duration"},
		{"negative peer rate", append([]string{"--peer-rate", "-1"}, fileVault...), 2, "--peer-rate -1: want calls a second"},
		{"peer rate not a number", append([]string{"--peer-rate", "NaN"}, fileVault...), 2, "--peer-rate NaN"},
		{"zero peer burst", append([]string{"--peer-burst", "0"}, fileVault...), 2, "--peer-burst 0: want at least 1"},
		{"zero max conns", append([]string{"--max-conns", "0"}, fileVault...), 2, "--max-conns 0: want at least 1"},
		{"negative max conns per peer", append([]string{"--max-conns-per-peer", "-1"}, fileVault...), 2, "--max-conns-per-peer -1: want connections per peer"},
		{"zero idle timeout", append([]string{"--idle-timeout", "0"}, fileVault...), 2, "--idle-timeout 0s: want a positive duration"},
		{"retention under a minute", append([]string{"--retention", "30s"}, fileVault...), 2, "--retention 30s: want at least 1m0s and longer than --token-ttl"},
		{"retention within the token TTL", append([]string{"--retention", "5m"}, fileVault...), 2, "--retention 5m0s: want at least 1m0s and longer than --token-ttl (5m0s)"},
		{"negative retention", append([]string{"--retention", "-10h"}, fileVault...), 2, "--retention -10h0m0s"},
		{"retention from the config file", append([]string{"--config", shortCfg}, fileVault...), 2, "--retention 1s: want at least"},
		{"retention in the config file not a duration", append([]string{"--config", badCfg}, fileVault...), 2, `bad.yaml:2: retention "10 days"`},
		{"listen without a port", append([]string{"--listen", "127.0.0.1"}, fileVault...), 2, `--listen "127.0.0.1": want [HOST]:PORT`},
		{"metrics address without a port", append([]string{"--metrics-addr", "9464"}, fileVault...), 2, `--metrics-addr "9464": want [HOST]:PORT`},
		{"log level", append([]string{"--log-level", "loud"}, fileVault...), 2, "--log-level"},
		{"launch PCR", append([]string{"--launch-pcr", "24"}, fileVault...), 2, "--launch-pcr 24"},
		{"extra argument", append(append([]string{}, fileVault...), "now"), 2, `unexpected argument "now"`},
		// Files named by flags are read before anything is created too
		// (a missing file is not a usage mistake: exit 1).
		{"missing EK CA", append([]string{"--ek-ca", missing}, fileVault...), 1, "--ek-ca " + missing},
		{"missing allow list", append([]string{"--ek-allow", missing}, fileVault...), 1, "--ek-allow"},
		// So is the open-file limit (no hard limit is near 10^12).
		{"max conns over the open-file limit", append([]string{"--max-conns", "1000000000000"}, fileVault...), 1, "the open-file limit (RLIMIT_NOFILE) is"},
		{"missing policy key", append([]string{"--policy-key", missing}, fileVault...), 1, "--policy-key " + missing},
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
			if code != c.code || !strings.Contains(errb.String(), c.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s%s", code, c.code, c.want, out.String(), errb.String())
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
