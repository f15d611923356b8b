// Package policycheck is the `policy check` command both binaries carry
// (`launcher policy check`, `attestd policy check`): one implementation,
// so an admin's CI and attestd judge a policy set the same way.
package policycheck

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/policy"
)

// Command is `policy check`.
var Command = &cli.Command{
	Name:    "policy check",
	Summary: "check policy files, or a policy directory loaded exactly as attestd loads it, and report every problem with file:line:column",
	Usage:   "[--policy-key PUB]... [--require-signed-policies] [--json] (FILE|DIR)...",
	Run:     run,
}

// run loads every file named (a directory stands for its policy files, as
// attestd --policies reads them) as one set, so duplicate names across
// files are found too; prints every problem, then one line per policy.
func run(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	var keys cli.Strings
	fs.Var(&keys, "policy-key", "admin public key `FILE` (PEM); a FILE.sig next to a policy must verify with one (repeatable)")
	requireSigned := fs.Bool("require-signed-policies", false, "also fail policies (and key files) without a valid FILE.sig by a --policy-key, as attestd serve does with this flag")
	fs.BoolVar(requireSigned, "require-signed", false, "the same as --require-signed-policies")
	asJSON := fs.Bool("json", false, "print the report as JSON: ok, policies (name, file, digest, summary, signers, warnings), problems (file, line, column, message, hint)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return cli.Usagef("give at least one policy FILE or DIR")
	}
	if *requireSigned && len(keys) == 0 {
		return cli.Usagef("--require-signed-policies needs at least one --policy-key")
	}
	var files []string
	dirs := false
	for _, arg := range fs.Args() {
		st, err := os.Stat(arg)
		if err != nil || !st.IsDir() {
			files = append(files, arg) // LoadFiles reports a missing file with the rest
			continue
		}
		dirs = true
		inDir, err := policy.PolicyFiles(arg)
		if err != nil {
			return err
		}
		if len(inDir) == 0 {
			return &cli.ExitError{Code: 1, Err: fmt.Errorf("%s holds no *.yaml or *.yml policy file: attestd would deny every launch", arg)}
		}
		files = append(files, inDir...)
	}
	opts, err := policy.NewLoadOptions(*requireSigned, keys)
	if err != nil {
		return err
	}
	set, err := policy.LoadFiles(files, opts)
	r := policy.NewCheckReport(set, err, time.Now())
	if err := r.Write(env.Stdout, *asJSON); err != nil {
		return err
	}
	if !r.OK {
		msg := fmt.Sprintf("%d problem(s) in %d of %d file(s)", len(r.Problems), r.ProblemFiles(), len(files))
		if dirs {
			msg += "; attestd would keep its previous policies"
		}
		return &cli.ExitError{Code: 1, Err: fmt.Errorf("%s", msg)}
	}
	if !*asJSON {
		fmt.Fprintf(env.Stdout, "%d policies ok\n", set.Len())
	}
	return nil
}
