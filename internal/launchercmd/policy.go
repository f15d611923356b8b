package launchercmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/launch"
	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/policy"
)

var policyInitCommand = &cli.Command{
	Name:    "policy init",
	Summary: "write a starting policy whose digests are computed from the artifacts themselves",
	Usage:   "(--kernel FILE [--initrd FILE] | --host-defaults [--agent FILE]) [--cmdline STRING]... [--image DIR|TAR] [--signer PUB]... [--secret NAME]... [--name NAME] [-o FILE]",
	Run:     runPolicyInit,
}

func runPolicyInit(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	kernel := fs.String("kernel", "", "guest kernel, exactly the file 'launcher run --kernel' boots")
	initrd := fs.String("initrd", "", "initramfs file; without it (and without --host-defaults) the policy allows no initrd")
	hostDefaults := fs.Bool("host-defaults", false, "allow what 'launcher run' uses when --kernel, --initrd and --cmdline are not given: the host kernel as a PVH vmlinux, the base initramfs built from --agent, and the default command lines for KVM and TCG")
	agent := fs.String("agent", "", "guest agent binary for --host-defaults (default: bulwark-agent beside launcher)")
	var cmdlines cli.Strings
	fs.Var(&cmdlines, "cmdline", "allow exactly this kernel command line (repeatable; default: a params rule with the launcher's own parameters)")
	image := fs.String("image", "", "OCI image (layout directory, OCI archive or docker-save tarball) to allow by manifest digest")
	manifest := fs.String("image-manifest", "", "pick this manifest digest from an image index with several")
	platform := fs.String("platform", "", "pick this platform (os/arch) from an image index (default "+measure.DefaultPlatform+")")
	algName := fs.String("alg", "sha256", "digest algorithm for kernel and initrd: sha256 (needed for signature checks) or sha384")
	var signers, secrets cli.Strings
	fs.Var(&signers, "signer", "PEM public `FILE` whose signature is required on every artifact (repeatable)")
	fs.Var(&secrets, "secret", "secret `NAME` released to launches this policy allows (repeatable)")
	name := fs.String("name", "", "policy name (default: the -o file name without .yaml, else \"default\")")
	out := fs.String("o", "", "write the policy to `FILE` instead of stdout")
	force := fs.Bool("force", false, "overwrite -o FILE if it exists")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkImageRef(*image); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected arguments: %q", fs.Args())
	}
	if *kernel == "" && !*hostDefaults {
		return cli.Usagef("give --kernel FILE, or --host-defaults for the kernel 'launcher run' boots by default")
	}
	if *agent != "" && !*hostDefaults {
		return cli.Usagef("--agent is only used with --host-defaults")
	}
	alg, err := measure.ParseAlg(*algName)
	if err != nil {
		return cli.Usagef("--alg: %v", err)
	}
	if *image == "" && (*manifest != "" || *platform != "") {
		return cli.Usagef("--image-manifest and --platform need --image")
	}
	rv := policy.ReferenceValues{Name: *name, Secrets: secrets, Sources: map[string]string{}, Now: time.Now()}
	if len(cmdlines) > 0 {
		rv.Cmdlines = cmdlines
	}
	if rv.Name != "" && !policy.ValidName(rv.Name) {
		return cli.Usagef("--name %q is not a valid policy name: use %s%s", rv.Name, policyNameRule, suggestName(rv.Name))
	}
	if rv.Name == "" && *out != "" {
		rv.Name = strings.TrimSuffix(strings.TrimSuffix(filepath.Base(*out), ".yaml"), ".yml")
		if !policy.ValidName(rv.Name) {
			return cli.Usagef("the policy name %q, taken from -o %s, is not a valid policy name (%s): give one with --name%s",
				rv.Name, *out, policyNameRule, suggestName(rv.Name))
		}
	}
	if *hostDefaults {
		if err := hostDefaultValues(ctx, &rv, *kernel == "", *initrd == "", len(cmdlines) == 0, *agent, alg); err != nil {
			return err
		}
	}
	if *kernel != "" {
		if rv.Kernel, _, err = measure.DigestFile(ctx, *kernel, alg); err != nil {
			return fmt.Errorf("kernel: %w", err)
		}
		rv.Sources["kernel"] = filepath.Base(*kernel)
	}
	if *initrd != "" {
		if rv.Initrd, _, err = measure.DigestFile(ctx, *initrd, alg); err != nil {
			return fmt.Errorf("initrd: %w", err)
		}
		rv.Sources["initrd"] = filepath.Base(*initrd)
	}
	if *image != "" {
		im, err := measure.OpenImage(ctx, *image, measure.ImageOptions{Manifest: *manifest, Platform: *platform})
		if err != nil {
			return err
		}
		im.Close()
		rv.Image = im.ManifestDigest
		rv.Sources["image"] = filepath.Base(filepath.Clean(*image)) + " " + im.Platform
	}
	used := map[string]bool{}
	for _, f := range signers {
		s, err := policy.LoadPublicKeyFile(f)
		if err != nil {
			return fmt.Errorf("--signer: %w", err)
		}
		s.Name = signerName(f, used)
		rv.Signers = append(rv.Signers, s)
	}
	doc, err := policy.Reference(rv)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err := env.Stdout.Write(doc)
		return err
	}
	if !*force {
		if _, err := os.Stat(*out); err == nil {
			return fmt.Errorf("%s exists; pass --force to replace it", *out)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := writeNew(*out, doc, 0o644, true); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "wrote %s (policy %s); check it with: launcher policy check %s\n", *out, nameOrDefault(rv.Name), *out)
	return nil
}

// hostDefaultValues measures what 'launcher run' uses when it is not given
// a kernel, initrd or command line (internal/launch): the host kernel as an
// extracted PVH vmlinux, the deterministic base initramfs (agent + modules)
// for it, and kvm.DefaultCmdline for both accelerators.
func hostDefaultValues(ctx context.Context, rv *policy.ReferenceValues, kernel, initrd, cmdline bool, agent string, alg measure.Alg) error {
	hk, err := kvm.FindHostKernel()
	if err != nil {
		return fmt.Errorf("--host-defaults: %w", err)
	}
	if kernel {
		p, err := kvm.DefaultKernel(ctx)
		if err != nil {
			return fmt.Errorf("--host-defaults: kernel: %w", err)
		}
		if rv.Kernel, _, err = measure.DigestFile(ctx, p, alg); err != nil {
			return fmt.Errorf("--host-defaults: kernel: %w", err)
		}
		rv.Sources["kernel"] = "vmlinux extracted from " + hk.BzImage
	}
	if initrd {
		agentBytes, agent, err := launch.ReadAgent(agent)
		if err != nil {
			return fmt.Errorf("--host-defaults: guest agent: %w (build it with 'make build', or give --agent)", err)
		}
		data, err := kvm.BuildBaseInitramfs(kvm.BaseOptions{Agent: agentBytes, KernelVersion: hk.Version})
		if err != nil {
			return fmt.Errorf("--host-defaults: base initramfs: %w", err)
		}
		rv.Initrd = measure.DigestBytes(alg, data)
		rv.Sources["initrd"] = "base initramfs: " + filepath.Base(agent) + " + " + hk.Version + " modules"
	}
	if cmdline {
		for _, a := range []string{kvm.AccelKVM, kvm.AccelTCG} {
			c, err := kvm.DefaultCmdline(a)
			if err != nil {
				return fmt.Errorf("--host-defaults: %w", err)
			}
			rv.Cmdlines = append(rv.Cmdlines, c)
		}
	}
	return nil
}

func nameOrDefault(n string) string {
	if n == "" {
		return "default"
	}
	return n
}

// nameFrom makes a policy-style name (policy.ValidName) of at most max
// bytes from s: lower case, other characters as '-', no leading
// punctuation. It may return "" or, rarely, a name still not valid.
func nameFrom(s string, max int) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	n := strings.TrimLeft(b.String(), "-_.")
	if len(n) > max {
		n = n[:max]
	}
	return n
}

// policyNameRule says what policy.ValidName accepts.
const policyNameRule = "lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63 characters"

// suggestName returns ", e.g. --name N" with a valid name made from a bad
// one, or "" when none can be made.
func suggestName(bad string) string {
	n := nameFrom(bad, 63)
	if !policy.ValidName(n) {
		return ""
	}
	return ", e.g. --name " + n
}

// signerName derives a policy signer name from a key file name.
func signerName(path string, used map[string]bool) string {
	n := nameFrom(strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)), 50)
	if n == "" {
		n = "signer"
	}
	cand := n
	for i := 2; used[cand]; i++ {
		cand = fmt.Sprintf("%s-%d", n, i)
	}
	used[cand] = true
	return cand
}
