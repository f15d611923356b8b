package launchercmd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"strings"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/fsutil"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/kvm"
)

var initrdBuildCommand = &cli.Command{
	Name:    "initrd build",
	Summary: "build the base initramfs (guest agent + kernel modules) for a guest kernel",
	Usage:   "[--agent bin/bulwark-agent] [--kernel-version VERSION] [--modules-dir /lib/modules] [--module NAME]... -o base.cpio",
	Run:     runInitrdBuild,
}

func runInitrdBuild(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	agent := fs.String("agent", "", "the static guest agent binary (default: bulwark-agent beside this launcher; build it with 'make build')")
	version := fs.String("kernel-version", "", "guest kernel version, the directory under --modules-dir (default: the host kernel that kvm.DefaultKernel boots)")
	modDir := fs.String("modules-dir", "/lib/modules", "root of the kernel module trees")
	out := fs.String("o", "", "output file (required); the archive is deterministic: same inputs, same digest")
	var mods cli.Strings
	fs.Var(&mods, "module", "kernel module to include with its dependencies (repeatable; default: "+strings.Join(kvm.DefaultModules(), ", ")+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *out == "" {
		return cli.Usagef("-o FILE is required")
	}
	agentBytes, _, err := launch.ReadAgent(*agent)
	if err != nil {
		return fmt.Errorf("guest agent: %w (give --agent, or build it with 'make build')", err)
	}
	if *version == "" {
		hk, err := kvm.FindHostKernel()
		if err != nil {
			return fmt.Errorf("%w (or give --kernel-version)", err)
		}
		*version = hk.Version
	}
	data, err := kvm.BuildBaseInitramfs(kvm.BaseOptions{Agent: agentBytes, KernelVersion: *version, ModulesDir: *modDir, Modules: mods})
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(*out, data, 0o644); err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	fmt.Fprintf(env.Stdout, "%s  sha256:%s  (%d bytes, kernel %s)\n", *out, hex.EncodeToString(sum[:]), len(data), *version)
	return nil
}
