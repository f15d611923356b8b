package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
)

// testProgram has a plain command, a group of two, and a command that
// passes arguments after "--" on.
func testProgram() *Program {
	withFile := func(ctx context.Context, env *Env, fs *flag.FlagSet, args []string) error {
		fs.Bool("bundle", false, "also write a bundle")
		fs.String("key", "", "key `FILE`")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return Usagef("give exactly one FILE")
		}
		return nil
	}
	return NewProgram("tool", "a test program",
		&Command{Name: "sign", Summary: "sign a file", Usage: "[--key FILE] FILE", Run: withFile},
		&Command{Name: "policy init", Summary: "write a policy", Usage: "", Run: withFile},
		&Command{Name: "policy check", Summary: "check policies", Usage: "FILE...", Run: withFile},
		&Command{Name: "run", Summary: "run a workload", Usage: "[--key FILE] -- ARGS...",
			Run: func(ctx context.Context, env *Env, fs *flag.FlagSet, args []string) error {
				fs.String("key", "", "key")
				if err := fs.Parse(args); err != nil {
					return err
				}
				return &ExitError{Code: 7, Err: errors.New("workload failed")}
			}},
		&Command{Name: "fail", Summary: "fails", Usage: "",
			Run: func(ctx context.Context, env *Env, fs *flag.FlagSet, args []string) error {
				if err := fs.Parse(args); err != nil {
					return err
				}
				return errors.New("it broke")
			}})
}

// TestNewProgramRefusesBadTables: a duplicate name or a command without a
// Run is a programming error caught when the table is built.
func TestNewProgramRefusesBadTables(t *testing.T) {
	run := func(context.Context, *Env, *flag.FlagSet, []string) error { return nil }
	for _, tc := range []struct {
		name string
		cmds []*Command
		want string
	}{
		{"duplicate", []*Command{{Name: "a", Run: run}, {Name: "a", Run: run}}, "duplicate command a"},
		{"no name", []*Command{{Run: run}}, "without a name"},
		{"no run", []*Command{{Name: "a"}}, "without a name or a Run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil || !strings.Contains(fmt.Sprint(r), tc.want) {
					t.Fatalf("recovered %v, want %q", r, tc.want)
				}
			}()
			NewProgram("tool", "", tc.cmds...)
		})
	}
}

func TestMainExitCodesAndStreams(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		code      int
		stdout    string // "" : stdout must be empty
		stderr    string // "" : stderr must be empty
		notStderr string
		notStdout string
	}{
		{name: "no command", args: nil, code: 2, stderr: "Commands:"},
		{name: "help", args: []string{"help"}, code: 0, stdout: "Commands:"},
		{name: "--help", args: []string{"--help"}, code: 0, stdout: "Commands:"},
		{name: "help for a command", args: []string{"help", "sign"}, code: 0, stdout: "Usage: tool sign [--key FILE] FILE"},
		{name: "help for an unknown command", args: []string{"help", "bogus"}, code: 2, stderr: `unknown command "bogus"`, notStderr: "bogus --help"},
		{name: "command --help", args: []string{"sign", "--help"}, code: 0, stdout: "-bundle"},
		{name: "command -h", args: []string{"policy", "check", "-h"}, code: 0, stdout: "Usage: tool policy check FILE..."},
		{name: "group alone", args: []string{"policy"}, code: 2, stderr: "give one of its commands"},
		{name: "group --help", args: []string{"policy", "--help"}, code: 0, stdout: "policy init"},
		{name: "help for a group", args: []string{"help", "policy"}, code: 0, stdout: "policy check"},
		{name: "unknown command", args: []string{"bogus"}, code: 2, stderr: `unknown command "bogus"`},
		{name: "unknown flag", args: []string{"sign", "--nope", "f"}, code: 2, stderr: "flag provided but not defined: -nope"},
		{name: "flag without its value", args: []string{"sign", "--key"}, code: 2, stderr: "flag needs an argument: -key"},
		{name: "bad boolean", args: []string{"sign", "--bundle=maybe", "f"}, code: 2, stderr: `invalid boolean value "maybe"`},
		{name: "bad flag syntax", args: []string{"sign", "---key", "k", "f"}, code: 2, stderr: "bad flag syntax: ---key"},
		{name: "usage error", args: []string{"sign"}, code: 2, stderr: "tool sign: give exactly one FILE"},
		{name: "flag after the argument", args: []string{"sign", "f", "--bundle"}, code: 2,
			stderr: `flag --bundle comes after the argument "f": give flags before arguments`},
		{name: "flag=value after the argument", args: []string{"policy", "check", "a.yaml", "--key=k"}, code: 2, stderr: "flag --key=k comes after"},
		{name: "a flag-like argument after --", args: []string{"run", "--", "--key", "x"}, code: 7, stderr: "workload failed", notStderr: "comes after"},
		{name: "ok", args: []string{"sign", "--bundle", "f"}, code: 0},
		{name: "failure", args: []string{"fail"}, code: 1, stderr: "tool fail: it broke"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := testProgram().Main(context.Background(), &Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}, tc.args)
			if code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			check := func(stream, got, want, not string) {
				if want == "" && got != "" {
					t.Errorf("%s should be empty, got:\n%s", stream, got)
				}
				if !strings.Contains(got, want) {
					t.Errorf("%s lacks %q:\n%s", stream, want, got)
				}
				if not != "" && strings.Contains(got, not) {
					t.Errorf("%s has %q:\n%s", stream, not, got)
				}
			}
			check("stdout", out.String(), tc.stdout, tc.notStdout)
			check("stderr", errb.String(), tc.stderr, tc.notStderr)
		})
	}
}
