package launchercmd

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/kvm"
)

func init() {
	Program.Register(&cli.Command{
		Name:    "kernel extract",
		Summary: "write a PVH-bootable vmlinux from a bzImage (default: the host kernel), ready to sign and boot",
		Usage:   "[--bzimage /boot/vmlinuz-VERSION] -o vmlinux",
		Run: func(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
			bz := fs.String("bzimage", "", "compressed kernel to extract (default: the host kernel, see 'launcher run')")
			out := fs.String("o", "", "output file (required)")
			if err := fs.Parse(args); err != nil {
				return err
			}
			if *out == "" || fs.NArg() > 0 {
				return cli.Usagef("-o FILE is required, and nothing else")
			}
			var data []byte
			if *bz == "" {
				p, err := kvm.DefaultKernel(ctx)
				if err != nil {
					return err
				}
				if data, err = os.ReadFile(p); err != nil {
					return err
				}
			} else {
				in, err := os.ReadFile(*bz)
				if err != nil {
					return err
				}
				if data, err = kvm.ExtractVmlinux(in); err != nil {
					return fmt.Errorf("%s: %w", *bz, err)
				}
			}
			if err := os.WriteFile(*out, data, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "%s\t%d bytes (ELF vmlinux with a PVH entry)\n", *out, len(data))
			return nil
		},
	})
}
