package attestdcmd

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/policy"
)

var policyCheckCommand = &cli.Command{
	Name:    "policy check",
	Summary: "load a policy directory exactly as attestd would and report every problem with file:line:column",
	Usage:   "[--require-signed-policies] [--policy-key PUB]... DIR",
	Run:     runPolicyCheck,
}

func runPolicyCheck(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	var keys multiFlag
	fs.Var(&keys, "policy-key", "admin public key `FILE` (PEM) that signs policy files (repeatable)")
	requireSigned := fs.Bool("require-signed-policies", false, "fail policies (and key files) without a valid FILE.sig by a --policy-key, as attestd serve does with this flag")
	asJSON := fs.Bool("json", false, "print the report as JSON: ok, policies (name, file, digest, summary, signers, warnings), problems (file, line, column, message, hint)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return cli.Usagef("give exactly one policy DIR")
	}
	if *requireSigned && len(keys) == 0 {
		return cli.Usagef("--require-signed-policies needs at least one --policy-key")
	}
	dir := fs.Arg(0)
	opts, err := policy.NewLoadOptions(*requireSigned, keys)
	if err != nil {
		return err
	}
	files, err := policy.PolicyFiles(dir)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return &cli.ExitError{Code: 1, Err: fmt.Errorf("%s holds no *.yaml or *.yml policy file: attestd would deny every launch", dir)}
	}
	set, err := policy.LoadFiles(files, opts)
	r := policy.NewCheckReport(set, err, time.Now())
	if err := r.Write(env.Stdout, *asJSON); err != nil {
		return err
	}
	if !r.OK {
		return &cli.ExitError{Code: 1, Err: fmt.Errorf("%d problem(s) in %d of %d file(s); attestd would keep its previous policies", len(r.Problems), r.ProblemFiles(), len(files))}
	}
	if !*asJSON {
		fmt.Fprintf(env.Stdout, "%d policies ok\n", set.Len())
	}
	return nil
}
