package attestdcmd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/attestd"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/internal/store/storetest"
	"github.com/bulwark-project/bulwark/token"
)

// audit verify reads an existing store and creates nothing: a wrong --data
// or a --db that is not a postgres:// URL used to create an empty store
// (in a directory named after the DSN, password included) and report
// "audit log OK: 0 records".
func TestAuditVerifyArgs(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	// good has a store, attestd's token key and a signed checkpoint; nocp
	// the same without a checkpoint file, emptied with an empty one.
	good, nocp, emptied := filepath.Join(base, "good"), filepath.Join(base, "nocp"), filepath.Join(base, "emptied")
	for _, dir := range []string{good, nocp, emptied} {
		st, err := embedded.Open(ctx, filepath.Join(dir, "store"), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		n := storetest.NewNode(t)
		if err := st.CreateNode(ctx, n); err != nil {
			t.Fatal(err)
		}
		if _, err := st.AppendAudit(ctx, store.AuditEntry{Kind: store.KindEnroll, NodeID: n.ID}); err != nil {
			t.Fatal(err)
		}
		tokens, err := token.LoadOrCreateKey(filepath.Join(dir, token.KeyFile), nil)
		if err != nil {
			t.Fatal(err)
		}
		cpPath := filepath.Join(dir, attestd.CheckpointFile)
		switch dir {
		case good:
			if _, err := attestd.NewCheckpoints(cpPath, tokens, nil).Record(ctx, st); err != nil {
				t.Fatal(err)
			}
		case emptied:
			if err := os.WriteFile(cpPath, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		st.Close()
	}
	offHost := filepath.Join(base, "copy.jsonl")
	if b, err := os.ReadFile(filepath.Join(good, attestd.CheckpointFile)); err != nil || os.WriteFile(offHost, b, 0o600) != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(base, "empty")
	os.Mkdir(empty, 0o700)
	nope := filepath.Join(base, "x", "nope")
	const pw = "SuperSecretPW"

	cases := []struct {
		name     string
		args     []string
		code     int
		want     string // in stdout+stderr
		noCreate string // this path must not exist afterwards
	}{
		{"existing store", []string{"--data", good}, 0, "audit log OK: 1 records (1..1), head 1:", ""},
		{"checkpoint reported", []string{"--data", good}, 0, "; 1 signed checkpoints, the last 1:", ""},
		// Without its checkpoint file the chain's start is not vouched
		// for: that is a failure unless asked for explicitly.
		{"no checkpoint file", []string{"--data", nocp}, 1, "audit log NOT verified: no signed checkpoints in " + filepath.Join(nocp, attestd.CheckpointFile), ""},
		{"no checkpoint file: start not vouched for", []string{"--data", nocp}, 1, "the chain's start cannot be vouched for; pass --allow-no-checkpoint", ""},
		{"emptied checkpoint file", []string{"--data", emptied}, 1, "the chain's start cannot be vouched for", ""},
		{"no checkpoint file, allowed", []string{"--data", nocp, "--allow-no-checkpoint"}, 0, "audit log OK: 1 records", ""},
		{"checkpoints from a copy", []string{"--data", nocp, "--checkpoints", offHost}, 1, "signature does not verify", ""},
		{"checkpoints from a copy, same key", []string{"--data", good, "--checkpoints", offHost}, 0, "1 signed checkpoints", ""},
		{"checkpoints without data", []string{"--db", "postgres://a@127.0.0.1:1/b", "--checkpoints", offHost}, 2, "--checkpoints needs --data", ""},
		{"missing data dir", []string{"--data", nope}, 1,
			"no attestd store at " + filepath.Join(nope, "store", "attestd.db") + ": is --data right?", filepath.Join(base, "x")},
		{"data dir without a store", []string{"--data", empty}, 1,
			"no attestd store at " + filepath.Join(empty, "store", "attestd.db"), filepath.Join(empty, "store")},
		{"db not a URL", []string{"--db", "garbage"}, 2, "--db: want a postgres:// or postgresql:// URL", ""},
		{"db key=value", []string{"--db", "host=127.0.0.1 user=a password=" + pw + " dbname=b"}, 2, "--db: want a postgres://", ""},
		{"db other scheme", []string{"--db", "mysql://a:" + pw + "@h/b"}, 2, "--db: want a postgres://", ""},
		{"db with missing data dir", []string{"--db", "postgres://a@127.0.0.1:1/b", "--data", nope}, 1, "is --data right?", filepath.Join(base, "x")},
		{"extra argument", []string{"--data", good, "more"}, 2, `unexpected argument "more"`, ""},
		{"nothing given", nil, 2, "give --data DIR or --db", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cwd := t.TempDir()
			t.Chdir(cwd)
			code, out, errs := runAttestd(t, "", append([]string{"audit", "verify"}, c.args...)...)
			if code != c.code || !strings.Contains(out+errs, c.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s%s", code, c.code, c.want, out, errs)
			}
			if strings.Contains(out+errs, pw) {
				t.Fatalf("the DSN's password is in the output:\n%s%s", out, errs)
			}
			if c.code != 0 && strings.Contains(out, "OK") {
				t.Fatalf("failed but says OK: %s", out)
			}
			if got := dirEntries(t, cwd); len(got) != 0 {
				t.Fatalf("created %v in the working directory", got)
			}
			if c.noCreate != "" {
				if _, err := os.Stat(c.noCreate); !os.IsNotExist(err) {
					t.Fatalf("%s was created (%v)", c.noCreate, err)
				}
			}
		})
	}
}
