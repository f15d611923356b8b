package attestdcmd

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/cli"
)

// runAttestd runs an attestd command in process and returns its exit code,
// stdout and stderr.
func runAttestd(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(stdin), Getenv: func(string) string { return "" }}
	code := Program.Main(context.Background(), env, args)
	return code, out.String(), errb.String()
}

// dirEntries lists dir's entries (nil when it does not exist).
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
