package launchercmd

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/kvm"
	"golang.org/x/term"
)

var kernelExtractCommand = &cli.Command{
	Name:    "kernel extract",
	Summary: "write a PVH-bootable vmlinux from a bzImage (default: the host kernel), ready to sign and boot",
	Usage:   "[--bzimage /boot/vmlinuz-VERSION] [-v] -o vmlinux",
	Run: func(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
		bz := fs.String("bzimage", "", "compressed kernel to extract (default: the host kernel, see 'launcher run')")
		out := fs.String("o", "", "output file (required)")
		verbose := fs.Bool("v", false, "print progress details (sizes, time taken) to stderr; the default when stderr is a terminal")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if *out == "" || fs.NArg() > 0 {
			return cli.Usagef("-o FILE is required, and nothing else")
		}
		if f, ok := env.Stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			*verbose = true
		}
		src, cached := *bz, ""
		if src == "" {
			hk, err := kvm.FindHostKernel()
			if err != nil {
				return err
			}
			src, cached = hk.BzImage, " (a copy cached by an earlier extraction is reused)"
		}
		if *verbose {
			if fi, err := os.Stat(src); err == nil {
				fmt.Fprintf(env.Stderr, "launcher: kernel %s: %.1f MiB compressed\n", src, float64(fi.Size())/(1<<20))
			}
		}
		// Decompressing takes long enough (~20 s on a loaded host) to
		// look like a hang: always say so first.
		fmt.Fprintf(env.Stderr, "launcher: decompressing the kernel %s to a vmlinux (this takes ~20 s under load)%s\n", src, cached)
		t0 := time.Now()
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
		if *verbose {
			fmt.Fprintf(env.Stderr, "launcher: vmlinux %.1f MiB in %.1f s\n", float64(len(data))/(1<<20), time.Since(t0).Seconds())
		}
		fmt.Fprintf(env.Stdout, "%s\t%d bytes (ELF vmlinux with a PVH entry)\n", *out, len(data))
		return nil
	},
}
