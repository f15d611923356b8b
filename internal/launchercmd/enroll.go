package launchercmd

import (
	"context"
	"flag"
	"fmt"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/launch"
)

var enrollCommand = &cli.Command{
	Name:    "enroll",
	Summary: "register this host's TPM (EK and attestation key) with attestd, once per host",
	Usage:   "--attestd HOST:PORT --ca CA.pem [--tpm SPEC]",
	Run: func(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
		af := addAttestdFlags(fs, env)
		tpmSpec := fs.String("tpm", env.Getenv("BULWARK_TPM"), "host TPM: /dev/tpmrm0, swtpm:DIR, tcp:HOST:PORT; default /dev/tpmrm0 or the managed swtpm (env BULWARK_TPM)")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return cli.Usagef("unexpected arguments: %q", fs.Args())
		}
		o, err := af.options()
		if err != nil {
			return err
		}
		id, err := launch.Enroll(ctx, *tpmSpec, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "enrolled: node %s (attestation key activated)\n", id)
		return nil
	},
}
