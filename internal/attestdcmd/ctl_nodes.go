package attestdcmd

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/cli"
)

var ctlNodesAction = &ctlCommand{name: "nodes", usage: "[--json]", summary: "list enrolled nodes with their last verdict", parse: ctlNodes}

var ctlNodesRmAction = &ctlCommand{name: "nodes rm", usage: "NODE_ID", summary: "delete an enrolled node (it must enroll again)", parse: ctlNodesRm}

var ctlNodesRevokeAction = &ctlCommand{name: "nodes revoke", usage: "NODE_ID", summary: "revoke a node: its quotes are refused until an admin deletes it", parse: ctlNodesRevoke}

func ctlNodes(env *cli.Env, fs *flag.FlagSet, args []string) (ctlAction, error) {
	asJSON := jsonFlag(fs)
	if err := noArgs(fs, args); err != nil {
		return nil, err
	}
	return func(ctx context.Context, c *ctlConn) error {
		resp, err := call(ctx, c, c.admin.ListNodes, &bulwarkv1.ListNodesRequest{})
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, resp)
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tSTATE\tENROLLED\tLAST VERDICT\tAT\tSANDBOX")
		for _, n := range resp.GetNodes() {
			at := ""
			if n.GetLastAttestedAt() != nil {
				at = n.GetLastAttestedAt().AsTime().Format("2006-01-02T15:04:05Z")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.GetNodeId(), n.GetState(), n.GetEnrolledAt().AsTime().Format("2006-01-02T15:04:05Z"),
				n.GetLastVerdict(), at, n.GetLastSandboxId())
		}
		return tw.Flush()
	}, nil
}

func ctlNodesRm(env *cli.Env, fs *flag.FlagSet, args []string) (ctlAction, error) {
	id, _, err := oneArg(fs, args, "NODE_ID")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c *ctlConn) error {
		if _, err := call(ctx, c, c.admin.DeleteNode, &bulwarkv1.DeleteNodeRequest{NodeId: id}); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "deleted node %s\n", id)
		return nil
	}, nil
}

func ctlNodesRevoke(env *cli.Env, fs *flag.FlagSet, args []string) (ctlAction, error) {
	id, _, err := oneArg(fs, args, "NODE_ID")
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, c *ctlConn) error {
		if _, err := call(ctx, c, c.admin.RevokeNode, &bulwarkv1.RevokeNodeRequest{NodeId: id}); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "revoked node %s\n", id)
		return nil
	}, nil
}
