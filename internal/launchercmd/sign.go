package launchercmd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/signing"
)

var signCommand = &cli.Command{
	Name:    "sign",
	Summary: "sign a kernel, initrd, policy (any file) or an OCI image with a cosign-compatible key",
	Usage: "--key cosign.key|tpm:[SPEC] [--output-signature S] [--bundle [--output-bundle B]] FILE\n" +
		"       launcher sign --key cosign.key|tpm:[SPEC] --image DIR|TAR [--ref NAME] [--image-manifest DIGEST] [--platform OS/ARCH] [--output-signature S] [--output-payload P]",
	Run: runSign,
}

func runSign(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	keyRef := fs.String("key", "", "private key: a cosign.key file (password from "+passwordEnv+" or the terminal) or tpm:[SPEC] (required)")
	outSig := fs.String("output-signature", "", "where to write the base64 signature (default FILE.sig, or DIR.sig for an image)")
	bundle := fs.Bool("bundle", false, "also write a sigstore bundle (FILE.bundle.json) for a file")
	outBundle := fs.String("output-bundle", "", "where to write the bundle (implies --bundle; default FILE.bundle.json)")
	image := fs.String("image", "", "sign this OCI image (layout directory, OCI archive or docker-save tarball) by its manifest digest")
	ref := fs.String("ref", "", "image reference the signature claims (docker-reference in the payload), e.g. registry.example/app")
	manifest := fs.String("image-manifest", "", "pick this manifest digest from an image index with several")
	platform := fs.String("platform", "", "pick this platform (os/arch) from an image index (default "+measure.DefaultPlatform+")")
	outPayload := fs.String("output-payload", "", "where to write the signed image payload (default DIR.payload.json)")
	asJSON := fs.Bool("json", false, "print what was signed and written as JSON: artifact, digest, key_id, signature, payload (images), bundle")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkImageRef(*image); err != nil {
		return err
	}
	if *keyRef == "" {
		return cli.Usagef("--key is required (a cosign.key file or tpm:[SPEC]; make one with 'launcher keygen')")
	}
	if *outBundle != "" {
		*bundle = true
	}
	if *image != "" {
		if fs.NArg() > 0 {
			return cli.Usagef("give either FILE or --image, not both")
		}
		if *bundle {
			return cli.Usagef("--bundle is for files; an image is signed as DIR.sig + DIR.payload.json")
		}
	} else {
		if fs.NArg() != 1 {
			return cli.Usagef("give exactly one FILE to sign (or --image DIR)")
		}
		if *ref != "" || *manifest != "" || *platform != "" || *outPayload != "" {
			return cli.Usagef("--ref, --image-manifest, --platform and --output-payload go with --image")
		}
	}

	s, err := loadSigner(ctx, *keyRef, passFunc(env))
	if err != nil {
		return err
	}
	defer s.Close()

	if *image != "" {
		digest, err := imageManifestDigest(ctx, *image, *manifest, *platform)
		if err != nil {
			return err
		}
		payload, sig, err := signing.SignImage(s, digest, *ref)
		if err != nil {
			return fmt.Errorf("signing image %s: %w", *image, err)
		}
		sigPath, payloadPath := signing.ImagePaths(*image)
		if *outSig != "" {
			sigPath = *outSig
		}
		if *outPayload != "" {
			payloadPath = *outPayload
		}
		if err := writeNew(payloadPath, payload, 0o644, true); err != nil {
			return err
		}
		if err := writeNew(sigPath, sig, 0o644, true); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env, signResult{Artifact: *image, Digest: digest, KeyID: s.KeyID(), Signature: sigPath, Payload: payloadPath})
		}
		fmt.Fprintf(env.Stdout, "Signed image %s (manifest %s) with key %s\nSignature written to %s\nPayload written to %s\n",
			*image, digest, s.KeyID(), sigPath, payloadPath)
		return nil
	}

	path := fs.Arg(0)
	sigPath := signing.SignaturePath(path)
	if *outSig != "" {
		sigPath = *outSig
	}
	digest, sig, err := signFile(s, path, signing.SignBlob)
	if err != nil {
		return err
	}
	if err := writeNew(sigPath, sig, 0o644, true); err != nil {
		return err
	}
	res := signResult{Artifact: path, Digest: digest, KeyID: s.KeyID(), Signature: sigPath}
	if !*asJSON {
		fmt.Fprintf(env.Stdout, "Signed %s (%s) with key %s\nSignature written to %s\n", path, digest, s.KeyID(), sigPath)
	}
	if *bundle {
		bundlePath := signing.BundlePath(path)
		if *outBundle != "" {
			bundlePath = *outBundle
		}
		d2, bj, err := signFile(s, path, signing.SignBundle)
		if err != nil {
			return err
		}
		if d2 != digest {
			return fmt.Errorf("%s changed while being signed (%s, then %s): not writing a bundle", path, digest, d2)
		}
		if err := writeNew(bundlePath, bj, 0o644, true); err != nil {
			return err
		}
		res.Bundle = bundlePath
		if !*asJSON {
			fmt.Fprintf(env.Stdout, "Bundle written to %s\n", bundlePath)
		}
	}
	if *asJSON {
		return printJSON(env, res)
	}
	return nil
}

// signResult is what sign --json prints.
type signResult struct {
	Artifact  string `json:"artifact"` // the file, or the image path
	Digest    string `json:"digest"`   // the file's sha256, or the image's manifest digest
	KeyID     string `json:"key_id"`
	Signature string `json:"signature"`         // where the signature was written
	Payload   string `json:"payload,omitempty"` // an image's signed payload
	Bundle    string `json:"bundle,omitempty"`  // the sigstore bundle, with --bundle
}

// printJSON writes v as indented JSON to stdout.
func printJSON(env *cli.Env, v any) error {
	enc := json.NewEncoder(env.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// signFile streams the file at path through sign and returns the digest of
// exactly the bytes signed.
func signFile(s *signing.Signer, path string, sign func(*signing.Signer, io.Reader) ([]byte, error)) (digest string, out []byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", nil, fmt.Errorf("opening artifact: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return "", nil, cli.Usagef("%s is a directory: sign an image with --image %s", path, path)
	}
	h := sha256.New()
	out, err = sign(s, io.TeeReader(f, h))
	if err != nil {
		return "", nil, fmt.Errorf("signing %s: %w", path, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), out, nil
}

// imageManifestDigest opens and verifies the image at path (every blob
// against its digest, via measure) and returns its identity, the manifest
// digest.
func imageManifestDigest(ctx context.Context, path, manifest, platform string) (string, error) {
	d, _, err := imageDigestAndHint(ctx, path, manifest, platform)
	return d, err
}

// imageDigestAndHint is imageManifestDigest with the image's
// measure.Image.DigestHint: why a docker archive's digest may not be the
// registry's, "" for an OCI layout or archive.
func imageDigestAndHint(ctx context.Context, path, manifest, platform string) (digest, hint string, err error) {
	im, err := measure.OpenImage(ctx, path, measure.ImageOptions{Manifest: manifest, Platform: platform})
	if err != nil {
		return "", "", err // it says "image PATH: ..."
	}
	defer im.Close()
	return im.ManifestDigest, im.DigestHint(), nil
}
