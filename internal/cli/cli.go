// Package cli is the small subcommand framework shared by the launcher and
// attestd binaries: each subcommand lives in its own file, registers itself
// in an init function, parses its own flags and returns an error that Main
// turns into a message and an exit code.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
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
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError.
func Usagef(format string, a ...any) error { return &UsageError{Msg: fmt.Sprintf(format, a...)} }

// Program is a set of commands under one binary name.
type Program struct {
	Name     string // "launcher"
	Summary  string
	commands map[string]*Command
}

// Register adds a command; it panics on a duplicate name (a programming error).
func (p *Program) Register(c *Command) {
	if p.commands == nil {
		p.commands = map[string]*Command{}
	}
	if _, dup := p.commands[c.Name]; dup {
		panic("cli: duplicate command " + c.Name)
	}
	p.commands[c.Name] = c
}

// Main runs the command named by args and returns the process exit code.
func (p *Program) Main(ctx context.Context, env *Env, args []string) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 && args[0] == "help" {
			args = append(args[1:], "--help")
		} else {
			p.printUsage(env.Stdout)
			if len(args) == 0 {
				return 2
			}
			return 0
		}
	}
	cmd, rest := p.lookup(args)
	if cmd == nil {
		fmt.Fprintf(env.Stderr, "%s: unknown command %q\n\n", p.Name, strings.Join(args[:min(len(args), 2)], " "))
		p.printUsage(env.Stderr)
		return 2
	}
	fs := flag.NewFlagSet(p.Name+" "+cmd.Name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s %s %s\n\n%s\n\nFlags:\n", p.Name, cmd.Name, cmd.Usage, cmd.Summary)
		fs.PrintDefaults()
	}
	err := cmd.Run(ctx, env, fs, rest)
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		fmt.Fprintf(env.Stderr, "%s %s: %s\n(run '%s %s --help' for usage)\n", p.Name, cmd.Name, ue.Msg, p.Name, cmd.Name)
		return 2
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			fmt.Fprintf(env.Stderr, "%s %s: %v\n", p.Name, cmd.Name, ee.Err)
		}
		return ee.Code
	}
	if strings.Contains(err.Error(), "flag provided but not defined") || strings.HasPrefix(err.Error(), "invalid value") {
		return 2 // the flag package already printed the problem and the usage
	}
	fmt.Fprintf(env.Stderr, "%s %s: %v\n", p.Name, cmd.Name, err)
	return 1
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
	fmt.Fprintf(w, "\nRun '%s COMMAND --help' for a command's flags.\n", p.Name)
}
