package attestdcmd

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/cli"
)

var ctlReplicaAction = &ctlCommand{name: "replica", usage: "[--json]", summary: "list join requests of new attestd replicas", parse: ctlReplicas}

var ctlReplicaApproveAction = &ctlCommand{name: "replica approve", usage: "ID", summary: "give a new replica the vault master key (wrapped to its join request's key)", parse: ctlReplicaApprove}

var ctlReplicaDenyAction = &ctlCommand{name: "replica deny", usage: "ID", summary: "remove a replica join request", parse: ctlReplicaDeny}

func ctlReplicas(env *cli.Env, fs *flag.FlagSet, args []string) (ctlAction, error) {
	asJSON := jsonFlag(fs)
	if err := noArgs(fs, args); err != nil {
		return nil, err
	}
	return func(ctx context.Context, c *ctlConn) error {
		resp, err := call(ctx, c, c.admin.ListReplicaJoins, &bulwarkv1.ListReplicaJoinsRequest{})
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, resp)
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNODE\tSTATE\tREQUESTED\tAPPROVED BY")
		for _, j := range resp.GetJoins() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", j.GetId(), j.GetNode(), j.GetState(), j.GetCreatedAt().AsTime().Format("2006-01-02T15:04:05Z"), j.GetApprovedBy())
		}
		return tw.Flush()
	}, nil
}

func ctlReplicaApprove(env *cli.Env, fs *flag.FlagSet, args []string) (ctlAction, error) {
	id, _, err := oneArg(fs, args, "ID (the join request id `attestd replica join` printed)")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c *ctlConn) error {
		resp, err := call(ctx, c, c.admin.ApproveReplicaJoin, &bulwarkv1.ApproveReplicaJoinRequest{Id: id})
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "approved join %s of replica %s: run `attestd replica join` (or start `attestd serve`) on it to finish\n", id, resp.GetJoin().GetNode())
		return nil
	}, nil
}

func ctlReplicaDeny(env *cli.Env, fs *flag.FlagSet, args []string) (ctlAction, error) {
	id, _, err := oneArg(fs, args, "ID")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c *ctlConn) error {
		if _, err := call(ctx, c, c.admin.DenyReplicaJoin, &bulwarkv1.DenyReplicaJoinRequest{Id: id}); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "removed join request %s\n", id)
		return nil
	}, nil
}
