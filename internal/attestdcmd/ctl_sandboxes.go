package attestdcmd

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/cli"
)

var ctlSandboxesAction = &ctlCommand{name: "sandboxes", usage: "[--node NODE_ID] [--json]",
	summary: "list running sandboxes attestd keeps: node, policy, verdict (allow, deny, revoked, stale) and its age", parse: ctlSandboxes}

func ctlSandboxes(env *cli.Env, fs *flag.FlagSet, args []string) (ctlAction, error) {
	asJSON := jsonFlag(fs)
	node := fs.String("node", "", "only this node's sandboxes")
	if err := noArgs(fs, args); err != nil {
		return nil, err
	}
	return func(ctx context.Context, c *ctlConn) error {
		resp, err := call(ctx, c, c.admin.ListSandboxes, &bulwarkv1.ListSandboxesAdminRequest{NodeId: *node})
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, resp)
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SANDBOX\tNODE\tPOLICY\tVERDICT\tAGE\tINTERVAL\tSECRETS\tREASONS")
		for _, s := range resp.GetSandboxes() {
			age := time.Duration(s.GetAgeSeconds() * float64(time.Second)).Round(time.Second)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%ds\t%s\t%s\n", s.GetSandboxId(), shortNode(s.GetNodeId()), s.GetPolicy(), s.GetVerdict(),
				age, s.GetIntervalSeconds(), strings.Join(s.GetSecrets(), ","), strings.Join(s.GetReasons(), "; "))
		}
		return tw.Flush()
	}, nil
}

// shortNode abbreviates a node id for a table ("sha256:" and 12 digits).
func shortNode(id string) string {
	if len(id) > 19 {
		return id[:19]
	}
	return id
}
