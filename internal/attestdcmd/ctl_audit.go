package attestdcmd

import (
	"context"
	"flag"
	"fmt"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/cli"
)

var ctlAuditAction = &ctlCommand{name: "audit", usage: "[--after SEQ] [--limit N] [--all]", summary: "print audit log records (one JSON detail per line)", parse: ctlAudit}

var ctlAuditVerifyAction = &ctlCommand{name: "audit verify", usage: "", summary: "have attestd verify the audit log's hash chain", parse: ctlAuditVerify}

func ctlAudit(env *cli.Env, fs *flag.FlagSet, args []string) (ctlAction, error) {
	after := fs.Uint64("after", 0, "start after sequence number `SEQ`")
	limit := fs.Uint("limit", 100, "records per page (1..1000)")
	all := fs.Bool("all", false, "follow pages to the end of the log (--timeout applies to each page)")
	if err := noArgs(fs, args); err != nil {
		return nil, err
	}
	if *limit == 0 || *limit > 1000 {
		return nil, cli.Usagef("--limit %d: want 1..1000", *limit)
	}
	return func(ctx context.Context, c *ctlConn) error {
		next := *after
		for {
			resp, err := call(ctx, c, c.admin.ReadAudit, &bulwarkv1.ReadAuditRequest{After: next, Limit: uint32(*limit)})
			if err != nil {
				return err
			}
			for _, r := range resp.GetRecords() {
				fmt.Fprintf(env.Stdout, "%d\t%s\t%s\t%s\t%s\n", r.GetSeq(), r.GetTime().AsTime().Format("2006-01-02T15:04:05.000000Z"), r.GetKind(), r.GetSubject(), r.GetDetail())
			}
			if !*all || resp.GetNext() == 0 {
				return nil
			}
			next = resp.GetNext()
		}
	}, nil
}

func ctlAuditVerify(env *cli.Env, fs *flag.FlagSet, args []string) (ctlAction, error) {
	if err := noArgs(fs, args); err != nil {
		return nil, err
	}
	return func(ctx context.Context, c *ctlConn) error {
		resp, err := call(ctx, c, c.admin.VerifyAudit, &bulwarkv1.VerifyAuditRequest{})
		if err != nil {
			return err
		}
		if !resp.GetOk() {
			return fmt.Errorf("audit log does NOT verify (%d records checked): %s", resp.GetRecords(), resp.GetError())
		}
		fmt.Fprintf(env.Stdout, "audit log OK: %d records, head %s\n", resp.GetRecords(), resp.GetHeadHash())
		return nil
	}, nil
}
