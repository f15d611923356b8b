package attestdcmd

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/cli"
)

var ctlPoliciesAction = &ctlCommand{name: "policies", usage: "[--json]", summary: "list loaded policies and load errors", parse: ctlPolicies}

var ctlPoliciesReloadAction = &ctlCommand{name: "policies reload", usage: "", summary: "reload the policy directory now (an invalid file keeps the old policies)", parse: ctlPoliciesReload}

func printPolicies(env *cli.Env, ps []*bulwarkv1.PolicyStatus) error {
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tLOADED\tVERSION\tFILE")
	var errs []string
	for _, p := range ps {
		if p.GetError() != "" {
			errs = append(errs, p.GetError())
			continue
		}
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\n", p.GetName(), p.GetLoaded(), p.GetVersion(), p.GetFile())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, e := range errs {
		fmt.Fprintf(env.Stdout, "\nlast load FAILED (previous policies stay in force):\n%s\n", e)
	}
	return nil
}

func ctlPolicies(env *cli.Env, fs *flag.FlagSet, args []string) (ctlAction, error) {
	asJSON := jsonFlag(fs)
	if err := noArgs(fs, args); err != nil {
		return nil, err
	}
	return func(ctx context.Context, c *ctlConn) error {
		resp, err := call(ctx, c, c.admin.ListPolicies, &bulwarkv1.ListPoliciesRequest{})
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, resp)
		}
		return printPolicies(env, resp.GetPolicies())
	}, nil
}

func ctlPoliciesReload(env *cli.Env, fs *flag.FlagSet, args []string) (ctlAction, error) {
	if err := noArgs(fs, args); err != nil {
		return nil, err
	}
	return func(ctx context.Context, c *ctlConn) error {
		resp, err := call(ctx, c, c.admin.ReloadPolicies, &bulwarkv1.ReloadPoliciesRequest{})
		if err != nil {
			return err
		}
		if err := printPolicies(env, resp.GetPolicies()); err != nil {
			return err
		}
		if !resp.GetOk() {
			return fmt.Errorf("reload failed; the previous policies stay in force")
		}
		return nil
	}, nil
}
