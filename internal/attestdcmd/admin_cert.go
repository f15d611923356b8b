package attestdcmd

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/pki"
)

var adminCertCommand = &cli.Command{
	Name:    "admin-cert",
	Summary: "issue an admin client certificate from attestd's CA (for attestd ctl)",
	Usage:   "--data DIR --name NAME -o OUTDIR [--days N] [--force] [--init-ca]",
	Run: func(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
		return issueCert(env, fs, args, pki.AdminRoleURI)
	},
}

var clientCertCommand = &cli.Command{
	Name:    "client-cert",
	Summary: "issue a host (launcher) client certificate from attestd's CA (optional: hosts need none)",
	Usage:   "--data DIR --name NAME -o OUTDIR [--days N] [--force] [--init-ca]",
	Run: func(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
		return issueCert(env, fs, args, pki.HostRoleURI)
	},
}

func issueCert(env *cli.Env, fs *flag.FlagSet, args []string, role string) error {
	dataDir := fs.String("data", "", "attestd's data `DIR` (holds the CA that 'attestd serve' creates on first start)")
	name := fs.String("name", "", "certificate `NAME` (common name and file name; not \"ca\")")
	out := fs.String("o", "", "output `DIR` for NAME.crt, NAME.key (0600) and ca.crt")
	days := fs.Int("days", 365, "validity in days")
	force := fs.Bool("force", false, "overwrite an existing NAME.crt, NAME.key, or a ca.crt of another CA, in -o")
	initCA := fs.Bool("init-ca", false, "create the CA in DATA/tls if there is none yet (normally 'attestd serve' creates it)")
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
	if err := pki.ValidClientCertName(*name); err != nil {
		return cli.Usagef("--name: %v", err)
	}
	if fi, err := os.Stat(*out); err == nil && !fi.IsDir() {
		return cli.Usagef("-o %s is not a directory", *out)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("-o: %w", err)
	}
	caDir := filepath.Join(*dataDir, "tls")
	if sameDir(*out, caDir) {
		return cli.Usagef("-o %s is the CA's own directory (DATA/tls): write client certificates elsewhere", *out)
	}
	// The CA must exist (attestd serve creates it): a mistyped --data must
	// not quietly start a second CA that attestd does not trust.
	ca, err := pki.Load(*dataDir, nil, nil)
	if errors.Is(err, pki.ErrNoCA) {
		if !*initCA {
			return fmt.Errorf("%v: is --data right? 'attestd serve --data DIR' creates the CA on first start; give --init-ca to create one here now", err)
		}
		ca = nil
	} else if err != nil {
		return err
	}
	// Everything that can be checked is checked before a CA is created.
	var caCert *x509.Certificate
	if ca != nil {
		caCert = ca.CACert
	}
	if err := pki.CheckClientCertOutput(*name, *out, caCert, *force); err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return fmt.Errorf("-o: %w", err)
	}
	if ca == nil {
		var created bool
		if ca, created, err = pki.LoadOrCreate(*dataDir, nil, nil); err != nil {
			return err
		}
		if created {
			fmt.Fprintf(env.Stderr, "created attestd CA in %s (--init-ca)\n", ca.Dir)
		}
	}
	certPath, keyPath, err := ca.IssueClientCertWith(*name, role, time.Duration(*days)*24*time.Hour, *out, pki.ClientCertOptions{Overwrite: *force})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "certificate: %s\nkey:         %s\nca:          %s\nCA SHA-256:  %s\n", certPath, keyPath, filepath.Join(*out, "ca.crt"), ca.CAFingerprint())
	return nil
}

// sameDir reports whether paths a and b name the same directory (the same
// file when both exist, else the same cleaned absolute path).
func sameDir(a, b string) bool {
	if fa, err := os.Stat(a); err == nil {
		if fb, err := os.Stat(b); err == nil {
			return os.SameFile(fa, fb)
		}
	}
	aa, err1 := filepath.Abs(a)
	ab, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && aa == ab
}
