package policycheck

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/cli"
)

func TestCheck(t *testing.T) {
	prog := cli.NewProgram("tool", "", Command)
	dir, empty := t.TempDir(), t.TempDir()
	good := "apiVersion: bulwark.dev/v1\nname: a\nkernel: {digests: []}\ncmdline: {exact: []}\n"
	if err := os.WriteFile(filepath.Join(dir, "a.yaml"), []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "again.yaml")
	if err := os.WriteFile(other, []byte(good), 0o644); err != nil { // the same name "a"
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		args         []string
		code         int
		stdout, errs string
	}{
		{"a directory", []string{dir}, 0, "1 policies ok", ""},
		{"a directory and a file naming the same policy", []string{dir, other}, 1, `policy name "a" is also used by`, "in 1 of 2 file(s); attestd would keep its previous policies"},
		{"a file alone", []string{other}, 0, "1 policies ok", ""},
		{"a directory without policies", []string{empty}, 1, "", "holds no *.yaml or *.yml policy file"},
		{"a missing file", []string{filepath.Join(dir, "nope.yaml")}, 1, "nope.yaml", "1 problem(s) in 1 of 1 file(s)"},
		{"nothing to check", nil, 2, "", "give at least one policy FILE or DIR"},
		{"signed without a key", []string{"--require-signed", dir}, 2, "", "needs at least one --policy-key"},
		{"signed without a key, long form", []string{"--require-signed-policies", dir}, 2, "", "needs at least one --policy-key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			env := &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: func(string) string { return "" }}
			code := prog.Main(context.Background(), env, append([]string{"policy", "check"}, tc.args...))
			if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errb.String(), tc.errs) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
		})
	}
}
