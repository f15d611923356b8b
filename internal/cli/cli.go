// Package cli is the small subcommand framework shared by the launcher and
// attestd binaries: each subcommand lives in its own file as a *Command
// value, each binary lists all of them in one command table (NewProgram),
// and each command parses its own flags and returns an error that Main
// turns into a message and an exit code.
package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/bulwark-project/bulwark/internal/version"
)

// Command is one subcommand, e.g. "launcher measure".
type Command struct {
	Name    string // e.g. "measure", or "policy init" for a nested command
	Summary string // one line for the command list
	Usage   string // argument synopsis shown by --help, e.g. "--kernel FILE [--json]"
	// Run executes the command. fs has been created with the command's name;
	// Run defines its flags on it and calls Parse itself.
	Run func(ctx context.Context, env *Env, fs *flag.FlagSet, args []string) error
}

// Env is what a command may touch of the outside world, so tests can run
// commands in process.
type Env struct {
	Stdout, Stderr io.Writer
	Stdin          io.Reader
	Getenv         func(string) string
}

// ExitError carries a specific exit code (e.g. a workload's own exit code).
type ExitError struct {
	Code int
	Err  error // may be nil: exit silently with Code
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

// UsageError marks a mistake in how the command was called (exit code 2).
type UsageError struct {
	Msg string
	// Fix marks a message that already shows the corrected command: Main
	// prints it as it is, instead of its generic note on a flag given
	// after the arguments.
	Fix bool
}

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError.
func Usagef(format string, a ...any) error { return &UsageError{Msg: fmt.Sprintf(format, a...)} }

// Program is a set of commands under one binary name.
type Program struct {
	Name     string // "launcher"
	Summary  string
	commands map[string]*Command
}

// NewProgram returns the program of a binary with its whole command table,
// given explicitly in one place. A duplicate or empty name panics (a
// programming error, caught by any test that builds the program).
func NewProgram(name, summary string, commands ...*Command) *Program {
	p := &Program{Name: name, Summary: summary, commands: make(map[string]*Command, len(commands))}
	for _, c := range commands {
		if c.Name == "" || c.Run == nil {
			panic(fmt.Sprintf("cli: %s: a command without a name or a Run: %+v", name, c))
		}
		if _, dup := p.commands[c.Name]; dup {
			panic("cli: duplicate command " + c.Name)
		}
		p.commands[c.Name] = c
	}
	return p
}

// Main runs the command named by args and returns the process exit code:
// 0, 1 for a failure, 2 for a usage mistake, or a command's own ExitError
// code. Help that was asked for goes to standard output; usage shown
// because of a mistake goes to standard error.
func (p *Program) Main(ctx context.Context, env *Env, args []string) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if len(args) == 0 {
		p.printUsage(env.Stderr)
		return 2
	}
	help := false
	switch args[0] {
	case "-h", "-help", "--help":
		p.printUsage(env.Stdout)
		return 0
	case "-version", "--version":
		fmt.Fprintln(env.Stdout, version.String(p.Name))
		return 0
	case "version":
		if _, ok := p.commands["version"]; !ok {
			fmt.Fprintln(env.Stdout, version.String(p.Name))
			return 0
		}
	case "help":
		if len(args) == 1 {
			p.printUsage(env.Stdout)
			return 0
		}
		args, help = args[1:], true
	}
	cmd, rest := p.lookup(args)
	if cmd == nil {
		return p.unknown(env, args, help)
	}
	if help {
		rest = []string{"--help"}
	}
	fs := flag.NewFlagSet(p.Name+" "+cmd.Name, flag.ContinueOnError)
	// The flag package writes a parse error and the usage to fs.Output();
	// hold them until we know whether help was asked for (stdout) or a
	// mistake was made (stderr).
	var flagOut bytes.Buffer
	fs.SetOutput(&flagOut)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s %s %s\n\n%s\n\nFlags:\n", p.Name, cmd.Name, cmd.Usage, cmd.Summary)
		fs.PrintDefaults()
	}
	err := cmd.Run(ctx, env, fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		env.Stdout.Write(flagOut.Bytes())
		return 0
	}
	env.Stderr.Write(flagOut.Bytes())
	if err == nil {
		return 0
	}
	// A flag the flag package refused (on fs, or on a FlagSet of the
	// command's own that writes to fs.Output()): it printed the problem
	// first, then the usage.
	if strings.HasPrefix(flagOut.String(), err.Error()+"\n") {
		return 2
	}
	var ue *UsageError
	if misplaced := flagAfterArgs(fs, rest); misplaced != "" && !(errors.As(err, &ue) && ue.Fix) {
		err = Usagef("%s", misplaced)
	}
	var ee *ExitError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(env.Stderr, "%s %s: %s\n(run '%s %s --help' for usage)\n", p.Name, cmd.Name, ue.Msg, p.Name, cmd.Name)
		return 2
	case errors.As(err, &ee):
		if ee.Err != nil {
			fmt.Fprintf(env.Stderr, "%s %s: %v\n", p.Name, cmd.Name, ee.Err)
		}
		return ee.Code
	}
	fmt.Fprintf(env.Stderr, "%s %s: %v\n", p.Name, cmd.Name, err)
	return 1
}

// flagAfterArgs explains a failed command whose arguments include one of
// its own flags after the first positional argument (the flag package stops
// at the first argument, so "sign FILE --bundle" reads "--bundle" as a
// second FILE). Arguments after "--" are the command's to pass on. It
// returns "" when there is nothing to explain.
func flagAfterArgs(fs *flag.FlagSet, rest []string) string {
	pos := fs.Args()
	if n := len(rest) - len(pos); n > 0 && rest[n-1] == "--" {
		return ""
	}
	for _, a := range pos {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if len(a) > 1 && a[0] == '-' && fs.Lookup(name) != nil {
			return fmt.Sprintf("flag %s comes after the argument %q: give flags before arguments", a, pos[0])
		}
	}
	return ""
}

// unknown reports args that name no command. A command group ("policy")
// lists its commands: help for it exits 0, a bare group is a usage mistake.
func (p *Program) unknown(env *Env, args []string, help bool) int {
	var group []string
	for n := range p.commands {
		if strings.HasPrefix(n, args[0]+" ") {
			group = append(group, n)
		}
	}
	if len(group) > 0 && (len(args) == 1 || strings.HasPrefix(args[1], "-")) {
		sort.Strings(group)
		w, code := env.Stderr, 2
		if help || (len(args) > 1 && (args[1] == "-h" || args[1] == "-help" || args[1] == "--help")) {
			w, code = env.Stdout, 0
		} else {
			fmt.Fprintf(w, "%s %s: give one of its commands\n\n", p.Name, args[0])
		}
		fmt.Fprintf(w, "Commands:\n")
		for _, n := range group {
			fmt.Fprintf(w, "  %-16s %s\n", n, p.commands[n].Summary)
		}
		fmt.Fprintf(w, "\nRun '%s COMMAND --help' for a command's flags.\n", p.Name)
		return code
	}
	fmt.Fprintf(env.Stderr, "%s: unknown command %q\n\n", p.Name, strings.Join(args[:min(len(args), 2)], " "))
	p.printUsage(env.Stderr)
	return 2
}

// lookup finds the longest registered command name that prefixes args.
func (p *Program) lookup(args []string) (*Command, []string) {
	if len(args) >= 2 {
		if c, ok := p.commands[args[0]+" "+args[1]]; ok {
			return c, args[2:]
		}
	}
	if c, ok := p.commands[args[0]]; ok {
		return c, args[1:]
	}
	return nil, nil
}

func (p *Program) printUsage(w io.Writer) {
	fmt.Fprintf(w, "%s — %s\n\nUsage: %s COMMAND [flags]\n\nCommands:\n", p.Name, p.Summary, p.Name)
	names := make([]string, 0, len(p.commands))
	for n := range p.commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-16s %s\n", n, p.commands[n].Summary)
	}
	fmt.Fprintf(w, "\nRun '%s COMMAND --help' for a command's flags; '%s --version' (or '%s version') for the build.\n", p.Name, p.Name, p.Name)
}

// Strings is a repeatable string flag: each use appends a value, in order.
//
//	var layers cli.Strings
//	fs.Var(&layers, "layer", "a layer (repeatable)")
type Strings []string

// String returns the values joined by commas (flag.Value).
func (s *Strings) String() string { return strings.Join(*s, ",") }

// Set appends a value (flag.Value).
func (s *Strings) Set(v string) error { *s = append(*s, v); return nil }
