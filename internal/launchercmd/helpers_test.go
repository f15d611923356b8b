package launchercmd

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/cli"
)

// runLauncher runs the launcher CLI in process with args, the environment
// variables in env (nil: none) and an empty standard input, and returns
// what it printed and its exit code.
func runLauncher(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Program.Main(context.Background(), &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""),
		Getenv: func(k string) string { return env[k] }}, args)
	return out.String(), errb.String(), code
}
