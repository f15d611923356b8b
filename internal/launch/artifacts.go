package launch

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/bulwark-project/bulwark/internal/registry"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/bulwark-project/bulwark/signing"
)

// ErrSignature marks a refusal because an artifact's signature is missing or
// does not verify with any trusted signer. Nothing boots after it.
var ErrSignature = errors.New("signature check failed")

// artifactSig is one artifact's signature as found next to it on disk.
type artifactSig struct {
	artifact string // "kernel", "initrd" or "image"
	path     string // where it was read from, for messages
	der      []byte // raw ASN.1 signature
	payload  []byte // image only: the simple-signing payload
}

// findSignatures reads the cosign signature stored beside an artifact file
// (F.sig) or an image (D.sig + D.payload.json), or, for an image layout
// written by 'cosign save' with none beside it, the signatures stored inside
// it. None is (nil, nil); a malformed one is an error.
func findSignatures(artifact, path string) ([]*artifactSig, error) {
	sig, err := findSignature(artifact, path)
	if err != nil || sig != nil || artifact != "image" {
		if sig == nil {
			return nil, err
		}
		return []*artifactSig{sig}, nil
	}
	inside, err := registry.LayoutSignatures(path)
	if err != nil {
		return nil, fmt.Errorf("image signature: %w", err)
	}
	var out []*artifactSig
	for _, s := range inside {
		der, err := signing.DecodeSignature(s.SignatureB64)
		if err != nil {
			return nil, fmt.Errorf("image signature in %s: %w", path, err)
		}
		out = append(out, &artifactSig{artifact: artifact, path: path + " (saved by cosign)", der: der, payload: s.Payload})
	}
	return out, nil
}

// findSignature reads the cosign signature stored beside an artifact file
// (F.sig) or an image (D.sig + D.payload.json). A missing signature is
// (nil, nil); a malformed one is an error.
func findSignature(artifact, path string) (*artifactSig, error) {
	sigPath, payloadPath := signing.SignaturePath(path), ""
	if artifact == "image" {
		sigPath, payloadPath = signing.ImagePaths(path)
	}
	sigB64, err := signing.ReadSignatureFile(sigPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s signature %s: %w", artifact, sigPath, err)
	}
	der, err := signing.DecodeSignature(sigB64)
	if err != nil {
		return nil, fmt.Errorf("%s signature %s: %w", artifact, sigPath, err)
	}
	sig := &artifactSig{artifact: artifact, path: sigPath, der: der}
	if payloadPath != "" {
		if sig.payload, err = signing.ReadPayloadFile(payloadPath); err != nil {
			return nil, fmt.Errorf("image signature payload %s: %w", payloadPath, err)
		}
	}
	return sig, nil
}

// verify checks s for the artifact with the given digest ("sha256:…")
// against the trusted signers and returns the key that verified it.
func (s *artifactSig) verify(digest string, signers []crypto.PublicKey) (crypto.PublicKey, error) {
	var lastErr error
	for _, pub := range signers {
		var err error
		if s.artifact == "image" {
			err = signing.VerifyImage(pub, s.payload, signing.EncodeSignature(s.der), digest)
		} else {
			alg, sum, perr := measure.ParseDigest(digest)
			if perr != nil {
				return nil, perr
			}
			if alg != measure.SHA256 {
				return nil, fmt.Errorf("%s: cosign signatures verify over SHA-256 digests, this one is %s", s.artifact, digest)
			}
			err = signing.VerifyDigest(pub, sum, s.der)
		}
		if err == nil {
			return pub, nil
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = errors.New("no trusted signer given")
	}
	return nil, lastErr
}

// checkSignatures is step 1 of a launch: every artifact must carry a
// signature by one of the trusted signers, else nothing boots. It returns the
// signatures to send to attestd, which checks them again against the policy.
// With no trusted signers it only collects what is there: attestd is then
// the one judge, before the workload starts.
func checkSignatures(ctx context.Context, arts []artifactRef, signers []crypto.PublicKey) ([]policy.ArtifactSignature, error) {
	var out []policy.ArtifactSignature
	for _, a := range arts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		sigs, err := findSignatures(a.kind, a.path)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSignature, err)
		}
		if len(sigs) == 0 {
			if len(signers) > 0 {
				return nil, fmt.Errorf("%w: %s %s has no signature (looked for %s); sign it with 'launcher sign'",
					ErrSignature, a.kind, a.path, sigLocation(a))
			}
			continue
		}
		// The first signature that verifies with a trusted signer (a saved
		// layout may hold several); with none trusted here, the first.
		sig := sigs[0]
		var pub crypto.PublicKey
		if len(signers) > 0 {
			for _, s := range sigs {
				if pub, err = s.verify(a.digest, signers); err == nil {
					sig = s
					break
				}
			}
			if err != nil {
				hint := ""
				if a.hint != "" && errors.Is(err, signing.ErrPayloadMismatch) {
					hint = " (" + a.hint + ")"
				}
				return nil, fmt.Errorf("%w: %s %s (%s): signature %s does not verify with any trusted signer (%s): %v%s",
					ErrSignature, a.kind, a.path, a.digest, sig.path, keyHints(signers), err, hint)
			}
		}
		ps := policy.ArtifactSignature{Artifact: a.kind, Signature: sig.der, Payload: sig.payload}
		if pub != nil {
			if pem, err := signing.MarshalPublicKey(pub); err == nil {
				ps.PublicKey = pem
			}
		}
		out = append(out, ps)
	}
	return out, nil
}

func sigLocation(a artifactRef) string {
	if a.kind == "image" {
		s, p := signing.ImagePaths(a.path)
		return s + " and " + p
	}
	return signing.SignaturePath(a.path)
}

func keyHints(signers []crypto.PublicKey) string {
	s := ""
	for i, k := range signers {
		if i > 0 {
			s += ", "
		}
		s += signing.KeyID(k)
	}
	return s
}

// artifactRef names one artifact of a launch and its measured digest.
type artifactRef struct {
	kind   string // "kernel", "initrd", "image"
	path   string
	digest string
	hint   string // why the digest may not be the one signed (measure.Image.DigestHint)
}

// LoadSigners reads PEM public keys (cosign.pub files).
func LoadSigners(paths []string) ([]crypto.PublicKey, error) {
	var out []crypto.PublicKey
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("signer key: %w", err)
		}
		pub, err := signing.LoadVerifierFile(p)
		if err != nil {
			return nil, fmt.Errorf("signer key %s: %w", p, err)
		}
		out = append(out, pub)
	}
	return out, nil
}
