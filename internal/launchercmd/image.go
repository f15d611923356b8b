package launchercmd

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/ociimage"
)

var imageBuildCommand = &cli.Command{
	Name:    "image build",
	Summary: "build a small OCI image layout from host directories (and/or a static busybox)",
	Usage:   "-o DIR [--layer HOSTDIR]... [--busybox APPLET,...] [--entrypoint ARG]... [--cmd ARG]... [--env K=V]...",
	Run:     runImageBuild,
}

func runImageBuild(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	out := fs.String("o", "", "output directory for the OCI image layout (must be new or empty)")
	var layers, entrypoint, cmd, envs cli.Strings
	fs.Var(&layers, "layer", "host directory to add as a layer (repeatable; applied in order)")
	busybox := fs.String("busybox", "", "add a first layer with a static busybox and these applets, e.g. sh,echo,cat")
	busyboxPath := fs.String("busybox-path", "/bin/busybox", "the static busybox binary to use (Debian: busybox-static)")
	fs.Var(&entrypoint, "entrypoint", "entrypoint argument (repeatable, in order)")
	fs.Var(&cmd, "cmd", "cmd argument (repeatable, in order)")
	fs.Var(&envs, "env", "environment variable K=V (repeatable)")
	workdir := fs.String("workdir", "", "working directory")
	user := fs.String("user", "", "user (uid[:gid] or name)")
	ref := fs.String("ref", "", "reference name recorded in the layout index, e.g. demo:latest")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return cli.Usagef("-o DIR is required")
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected arguments: %q", fs.Args())
	}
	for _, e := range envs {
		if !strings.Contains(e, "=") {
			return cli.Usagef("--env %q is not K=V", e)
		}
	}
	// Each --layer must be a directory (a symlink to one is followed): a
	// file or a dangling name would otherwise become an empty layer, and an
	// image missing its contents could be signed and shipped.
	for _, d := range layers {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("--layer %s: %w (give an existing host directory)", d, err)
		}
		if !fi.IsDir() {
			return cli.Usagef("--layer %s is not a directory: give the host directory whose contents become the layer", d)
		}
	}
	spec := ociimage.Spec{Entrypoint: entrypoint, Cmd: cmd, Env: envs, WorkingDir: *workdir, User: *user, RefName: *ref}
	if *busybox != "" {
		l, err := ociimage.BusyboxLayer(*busyboxPath, strings.Split(*busybox, ",")...)
		if err != nil {
			return err
		}
		spec.Layers = append(spec.Layers, l)
	}
	for _, d := range layers {
		spec.Layers = append(spec.Layers, ociimage.Layer{Dir: d})
	}
	if len(spec.Layers) == 0 {
		return cli.Usagef("give at least one --layer or --busybox")
	}
	img, err := ociimage.Build(spec)
	if err != nil {
		return fmt.Errorf("building image: %w", err)
	}
	digest, err := ociimage.WriteLayout(*out, img, *ref)
	if err != nil {
		return fmt.Errorf("writing %s: %w", *out, err)
	}
	fmt.Fprintf(env.Stdout, "%s\t%s\n", *out, digest)
	return nil
}
