package launchercmd

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/registry"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/signing"
)

var verifyCommand = &cli.Command{
	Name:    "verify",
	Summary: "verify the cosign-compatible signature of a file (kernel, initrd, policy) or an OCI image",
	Usage: "--key cosign.pub [--signature S] [--bundle B] FILE\n" +
		"       launcher verify --key cosign.pub --image DIR|TAR [--signature S] [--payload P] [--image-manifest DIGEST] [--platform OS/ARCH]",
	Run: runVerify,
}

func runVerify(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	keyRef := fs.String("key", "", "public key: a cosign.pub file, or tpm:[SPEC] for the TPM's signing key (required)")
	sigFlag := fs.String("signature", "", "signature file (default FILE.sig, or DIR.sig for an image)")
	bundleFlag := fs.String("bundle", "", "sigstore bundle file to verify instead of a .sig (default: FILE.bundle.json is checked too when present)")
	image := fs.String("image", "", "verify this OCI image (layout directory, OCI archive or docker-save tarball) by its manifest digest")
	payloadFlag := fs.String("payload", "", "signed image payload (default DIR.payload.json)")
	manifest := fs.String("image-manifest", "", "pick this manifest digest from an image index with several")
	platform := fs.String("platform", "", "pick this platform (os/arch) from an image index (default "+measure.DefaultPlatform+")")
	asJSON := fs.Bool("json", false, "print the result as JSON: verified, artifact, digest, key_id, sources, reference (images), error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkImageRef(*image); err != nil {
		return err
	}
	if *keyRef == "" {
		return cli.Usagef("--key is required (the signer's cosign.pub)")
	}
	if *image != "" {
		if fs.NArg() > 0 {
			return cli.Usagef("give either FILE or --image, not both")
		}
		if *bundleFlag != "" {
			return cli.Usagef("--bundle is for files; an image is verified from DIR.sig + DIR.payload.json")
		}
	} else {
		if fs.NArg() != 1 {
			return cli.Usagef("give exactly one FILE to verify (or --image DIR)")
		}
		if *payloadFlag != "" || *manifest != "" || *platform != "" {
			return cli.Usagef("--payload, --image-manifest and --platform go with --image")
		}
	}
	if *image == "" {
		// The file first, before the key (which may open a TPM) and before
		// looking for FILE.sig: a missing file is not a missing signature.
		if err := checkVerifyFile(fs.Arg(0)); err != nil {
			return err
		}
	}
	pub, err := loadPublicKey(ctx, *keyRef)
	if err != nil {
		return err
	}
	keyID := signing.KeyID(pub)

	var res verifyResult
	if *image != "" {
		res, err = verifyImage(ctx, pub, keyID, *image, *sigFlag, *payloadFlag, *manifest, *platform)
	} else {
		res, err = verifyFile(pub, keyID, fs.Arg(0), *sigFlag, *bundleFlag)
	}
	res.KeyID, res.Verified = keyID, err == nil
	if res.Sources == nil {
		res.Sources = []string{}
	}
	if err != nil {
		res.Error = err.Error()
	}
	if *asJSON {
		if jerr := printJSON(env, res); jerr != nil {
			return jerr
		}
		return err
	}
	if err != nil {
		return err
	}
	for _, line := range res.text {
		fmt.Fprintln(env.Stdout, line)
	}
	return nil
}

// verifyResult is what verify found; --json prints it, text mode its lines.
type verifyResult struct {
	Verified  bool     `json:"verified"`
	Artifact  string   `json:"artifact"`         // the file, or the image path
	Digest    string   `json:"digest,omitempty"` // the file's sha256, or the image's manifest digest
	KeyID     string   `json:"key_id"`
	Sources   []string `json:"sources"`             // the signature, bundle or payload files checked
	Reference string   `json:"reference,omitempty"` // the reference an image signature claims
	Error     string   `json:"error,omitempty"`
	text      []string // the lines text mode prints on success
}

// checkVerifyFile makes sure the FILE argument of verify is there and is not
// a directory (an image layout, verified with --image).
func checkVerifyFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("verify %s: %w (give the file that was signed)", path, err)
	}
	if fi.IsDir() {
		return cli.Usagef("%s is a directory: verify an image with --image %s", path, path)
	}
	return nil
}

// loadPublicKey reads a cosign.pub file, or the public half of a TPM-held
// signing key for tpm:[SPEC].
func loadPublicKey(ctx context.Context, keyRef string) (crypto.PublicKey, error) {
	if strings.HasPrefix(keyRef, "tpm:") {
		s, err := loadSigner(ctx, keyRef, nil)
		if err != nil {
			return nil, fmt.Errorf("opening TPM signing key: %w", err)
		}
		defer s.Close()
		return s.Public(), nil
	}
	return signing.LoadVerifierFile(keyRef)
}

// verifyFile checks a file against its detached signature and/or bundle.
// Without --signature/--bundle it checks every one present next to the file
// (FILE.sig, FILE.bundle.json) and requires at least one.
func verifyFile(pub crypto.PublicKey, keyID, path, sigPath, bundlePath string) (verifyResult, error) {
	res := verifyResult{Artifact: path}
	type check struct {
		kind, path string
	}
	var checks []check
	if sigPath != "" {
		checks = append(checks, check{"signature", sigPath})
	}
	if bundlePath != "" {
		checks = append(checks, check{"bundle", bundlePath})
	}
	if len(checks) == 0 {
		for _, c := range []check{{"signature", signing.SignaturePath(path)}, {"bundle", signing.BundlePath(path)}} {
			if _, err := os.Stat(c.path); err == nil {
				checks = append(checks, c)
			}
		}
		if len(checks) == 0 {
			return res, verifyFailure(path, keyID, "", fmt.Errorf("%w: looked for %s and %s (sign with 'launcher sign', or use --signature/--bundle)",
				signing.ErrNoSignature, signing.SignaturePath(path), signing.BundlePath(path)))
		}
	}
	var digest string
	for _, c := range checks {
		var sidecar []byte
		var err error
		if c.kind == "signature" {
			sidecar, err = signing.ReadSignatureFile(c.path)
		} else {
			sidecar, err = signing.ReadBundleFile(c.path)
		}
		if err != nil {
			return res, verifyFailure(path, keyID, c.path, err)
		}
		f, err := os.Open(path)
		if err != nil {
			return res, fmt.Errorf("verify %s: %w", path, err)
		}
		h := sha256.New()
		r := io.TeeReader(f, h)
		if c.kind == "signature" {
			err = signing.VerifyBlob(pub, r, sidecar)
		} else {
			err = signing.VerifyBundle(pub, r, sidecar)
		}
		f.Close()
		if err != nil {
			return res, verifyFailure(path, keyID, c.kind+" "+c.path, err)
		}
		d := "sha256:" + hex.EncodeToString(h.Sum(nil))
		if digest != "" && d != digest {
			return res, verifyFailure(path, keyID, "", errors.New("the file changed while being verified"))
		}
		digest = d
	}
	res.Digest = digest
	for _, c := range checks {
		res.Sources = append(res.Sources, c.path)
		res.text = append(res.text, fmt.Sprintf("Verified OK: %s (%s) signed by key %s (%s %s)", path, digest, keyID, c.kind, c.path))
	}
	return res, nil
}

func verifyImage(ctx context.Context, pub crypto.PublicKey, keyID, image, sigPath, payloadPath, manifest, platform string) (verifyResult, error) {
	res := verifyResult{Artifact: image}
	defSig, defPayload := signing.ImagePaths(image)
	if sigPath == "" {
		sigPath = defSig
	}
	if payloadPath == "" {
		payloadPath = defPayload
	}
	res.Sources = []string{sigPath, payloadPath}
	what := "image " + image
	if _, err := os.Stat(sigPath); errors.Is(err, fs.ErrNotExist) && sigPath == defSig && payloadPath == defPayload {
		// No side-car: a layout written by 'cosign save' holds its own.
		if saved, err := registry.LayoutSignatures(image); err != nil {
			return res, verifyFailure(what, keyID, image, err)
		} else if len(saved) > 0 {
			return verifySavedImage(ctx, res, pub, keyID, image, saved, manifest, platform)
		}
	}
	sig, err := signing.ReadSignatureFile(sigPath)
	if err != nil {
		return res, verifyFailure(what, keyID, sigPath, err)
	}
	payload, err := signing.ReadPayloadFile(payloadPath)
	if err != nil {
		return res, verifyFailure(what, keyID, payloadPath, err)
	}
	digest, hint, err := imageDigestAndHint(ctx, image, manifest, platform)
	if err != nil {
		return res, err
	}
	res.Digest = digest
	if err := signing.VerifyImage(pub, payload, sig, digest); err != nil {
		ferr := verifyFailure(fmt.Sprintf("%s (manifest %s)", what, digest), keyID, sigPath+" + "+payloadPath, err)
		if hint != "" && errors.Is(err, signing.ErrPayloadMismatch) {
			ferr.(*verifyError).msg += " (" + hint + ")"
		}
		return res, ferr
	}
	p, err := signing.ParseSimpleSigning(payload)
	if err != nil { // cannot happen after VerifyImage
		return res, err
	}
	res.Reference = p.Critical.Identity.DockerReference
	ref := res.Reference
	if ref == "" {
		ref = "(none)"
	}
	res.text = []string{fmt.Sprintf("Verified OK: %s (manifest %s, claimed reference %s) signed by key %s (signature %s)",
		what, digest, ref, keyID, sigPath)}
	return res, nil
}

// verifySavedImage checks the signatures 'cosign save' stored inside an
// image layout: one of them must verify for the image's manifest digest.
func verifySavedImage(ctx context.Context, res verifyResult, pub crypto.PublicKey, keyID, image string, saved []registry.Signature, manifest, platform string) (verifyResult, error) {
	what := "image " + image
	res.Sources = []string{image + " (signatures saved by cosign)"}
	digest, err := imageManifestDigest(ctx, image, manifest, platform)
	if err != nil {
		return res, err
	}
	res.Digest = digest
	for _, s := range saved {
		if err = signing.VerifyImage(pub, s.Payload, s.SignatureB64, digest); err == nil {
			p, _ := signing.ParseSimpleSigning(s.Payload)
			ref := "(none)"
			if p != nil && p.Critical.Identity.DockerReference != "" {
				res.Reference = p.Critical.Identity.DockerReference
				ref = res.Reference
			}
			res.text = []string{fmt.Sprintf("Verified OK: %s (manifest %s, claimed reference %s) signed by key %s (signature saved by cosign in the layout)",
				what, digest, ref, keyID)}
			return res, nil
		}
	}
	return res, verifyFailure(fmt.Sprintf("%s (manifest %s)", what, digest), keyID, fmt.Sprintf("the %d signature(s) saved by cosign", len(saved)), err)
}

// verifyError is a failed verification: Error is the one-line message for
// the user, Unwrap the signing error class (for errors.Is).
type verifyError struct {
	msg string
	err error
}

func (e *verifyError) Error() string { return e.msg }
func (e *verifyError) Unwrap() error { return e.err }

// verifyFailure names the artifact, the key, where the signature came from
// (source, may be "") and the reason, in one line.
func verifyFailure(what, keyID, source string, err error) error {
	var reason string
	detail := err.Error()
	switch {
	case errors.Is(err, signing.ErrNoSignature), errors.Is(err, fs.ErrNotExist):
		reason = "missing signature"
	case errors.Is(err, signing.ErrPayloadMismatch):
		reason = "payload digest mismatch (the signature is for another image)"
	case errors.Is(err, signing.ErrPayloadType):
		reason = "not a cosign image signature payload"
	case errors.Is(err, signing.ErrMalformedSignature):
		reason = "malformed signature"
	case errors.Is(err, signing.ErrMalformedBundle):
		reason = "malformed or unsupported bundle"
	case errors.Is(err, signing.ErrBadSignature):
		reason = "bad signature"
		detail = "the artifact was modified after signing, or it was signed by another key"
	default:
		reason = "verification failed"
	}
	if source != "" {
		reason += " in " + source
	}
	return &verifyError{
		msg: fmt.Sprintf("%s: NOT verified with key %s: %s: %s", what, keyID, reason, detail),
		err: err,
	}
}
