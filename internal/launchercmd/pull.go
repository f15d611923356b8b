package launchercmd

import (
	"context"
	"crypto"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/registry"
	"github.com/bulwark-project/bulwark/signing"
)

var imagePullCommand = &cli.Command{
	Name:    "image pull",
	Summary: "fetch an image from a registry into an OCI layout, with the cosign signature the registry holds for it",
	Usage:   "-o DIR [--signer cosign.pub]... [--allow-tag] [--platform OS/ARCH] REGISTRY/REPO@sha256:DIGEST",
	Run:     runImagePull,
}

// pullFlags are the registry flags of 'image pull' and 'run'.
type pullFlags struct {
	allowTag *bool
	insecure *bool
}

func addPullFlags(fs *flag.FlagSet) pullFlags {
	return pullFlags{
		allowTag: fs.Bool("allow-tag", false, "accept an image named by tag (resolved to its current digest, which is what is measured); by default only REPO@sha256:... is accepted"),
		insecure: fs.Bool("allow-http-registry", false, "talk to the registry over plain HTTP (a registry on loopback in tests; never in production)"),
	}
}

func runImagePull(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	out := fs.String("o", "", "write the OCI layout to this new `DIR` (and DIR.sig, DIR.payload.json)")
	platform := fs.String("platform", "", "pick this platform (os/arch) from an index (default linux/amd64)")
	var signers cli.Strings
	fs.Var(&signers, "signer", "public key the image's registry signature must verify with (repeatable); without it the first signature found is kept, unverified")
	pf := addPullFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return cli.Usagef("give exactly one image reference, REGISTRY/REPO@sha256:DIGEST")
	}
	if *out == "" {
		return cli.Usagef("-o DIR is required (a new directory for the OCI layout)")
	}
	var keys []crypto.PublicKey
	for _, s := range signers {
		k, err := signing.LoadVerifierFile(s)
		if err != nil {
			return fmt.Errorf("--signer: %w", err)
		}
		keys = append(keys, k)
	}
	res, err := pullImage(ctx, env, fs.Arg(0), *out, *platform, pf, keys)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "Pulled %s (manifest %s) into %s\n", res.Ref, res.Digest, *out)
	return nil
}

// pullImage pulls ref into dir and writes the registry's cosign signature
// for it as dir.sig + dir.payload.json: the first that verifies with one of
// keys, or, with no keys, the first found (a warning says it was not
// checked here). With keys, an image with no such signature is refused and
// dir removed.
func pullImage(ctx context.Context, env *cli.Env, ref, dir, platform string, pf pullFlags, keys []crypto.PublicKey) (*registry.Result, error) {
	if _, err := os.Stat(dir); err == nil {
		if ents, _ := os.ReadDir(dir); len(ents) > 0 {
			return nil, cli.Usagef("-o %s exists and is not empty: give a new directory", dir)
		}
	}
	res, err := registry.Pull(ctx, ref, dir, registry.Options{AllowTag: *pf.allowTag, Platform: platform, Insecure: *pf.insecure})
	if errors.Is(err, registry.ErrTagNeedsFlag) {
		return nil, cli.Usagef("%v (--allow-tag)", err)
	}
	if err != nil {
		return nil, err
	}
	var chosen *registry.Signature
	for i := range res.Signatures {
		s := &res.Signatures[i]
		if len(keys) == 0 {
			chosen = s
			break
		}
		for _, k := range keys {
			if signing.VerifyImage(k, s.Payload, s.SignatureB64, res.Digest) == nil {
				chosen = s
				break
			}
		}
		if chosen != nil {
			break
		}
	}
	switch {
	case chosen == nil && len(keys) > 0:
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%s (manifest %s): none of the %d cosign signature(s) in the registry verifies with the given --signer keys", ref, res.Digest, len(res.Signatures))
	case chosen == nil:
		fmt.Fprintf(env.Stderr, "launcher: warning: %s (manifest %s) has no cosign signature in the registry\n", ref, res.Digest)
		return res, nil
	case len(keys) == 0:
		fmt.Fprintf(env.Stderr, "launcher: note: kept the registry's first cosign signature of %d for %s, not verified here (give --signer to check it)\n", len(res.Signatures), res.Digest)
	}
	sigPath, payloadPath := signing.ImagePaths(dir)
	if err := writeNew(payloadPath, chosen.Payload, 0o644, true); err != nil {
		return nil, err
	}
	if err := writeNew(sigPath, chosen.SignatureB64, 0o644, true); err != nil {
		return nil, err
	}
	return res, nil
}

// pullForRun pulls a registry reference given to 'run --image' into a new
// directory under the state directory and returns the layout's path.
func pullForRun(ctx context.Context, env *cli.Env, state, ref string, pf pullFlags, keys []crypto.PublicKey) (string, func(), error) {
	base := filepath.Join(state, "images")
	if err := os.MkdirAll(base, 0o700); err != nil {
		return "", nil, err
	}
	tmp, err := os.MkdirTemp(base, "pull-")
	if err != nil {
		return "", nil, err
	}
	dir := filepath.Join(tmp, "image")
	cleanup := func() { os.RemoveAll(tmp) }
	if _, err := pullImage(ctx, env, ref, dir, "", pf, keys); err != nil {
		cleanup()
		return "", nil, err
	}
	return dir, cleanup, nil
}
