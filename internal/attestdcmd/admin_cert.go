package attestdcmd

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/bulwark-project/bulwark/internal/attestd"
	"github.com/bulwark-project/bulwark/internal/cli"
)

func init() {
	Program.Register(&cli.Command{
		Name:    "admin-cert",
		Summary: "issue an admin client certificate from attestd's CA (for attestd ctl)",
		Usage:   "--data DIR --name NAME -o OUTDIR [--days N]",
		Run: func(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
			return issueCert(env, fs, args, attestd.AdminRoleURI)
		},
	})
	Program.Register(&cli.Command{
		Name:    "client-cert",
		Summary: "issue a host (launcher) client certificate from attestd's CA (optional: hosts need none)",
		Usage:   "--data DIR --name NAME -o OUTDIR [--days N]",
		Run: func(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
			return issueCert(env, fs, args, attestd.HostRoleURI)
		},
	})
}

func issueCert(env *cli.Env, fs *flag.FlagSet, args []string, role string) error {
	dataDir := fs.String("data", "", "attestd's data `DIR` (holds the CA; created on first start)")
	name := fs.String("name", "", "certificate `NAME` (common name and file name)")
	out := fs.String("o", "", "output `DIR` for NAME.crt, NAME.key (0600) and ca.crt")
	days := fs.Int("days", 365, "validity in days")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if *dataDir == "" || *name == "" || *out == "" {
		return cli.Usagef("--data, --name and -o are required")
	}
	if *days < 1 || *days > 3650 {
		return cli.Usagef("--days %d: want 1..3650", *days)
	}
	pki, created, err := attestd.LoadOrCreatePKI(*dataDir, nil, nil)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(env.Stderr, "created attestd CA in %s\n", pki.Dir)
	}
	certPath, keyPath, err := pki.IssueClientCert(*name, role, time.Duration(*days)*24*time.Hour, *out)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "certificate: %s\nkey:         %s\nca:          %s/ca.crt\nCA SHA-256:  %s\n", certPath, keyPath, *out, pki.CAFingerprint())
	return nil
}
