package shim

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/bulwark-project/bulwark/internal/registry"
)

// SignatureRegistriesEnv names the environment variable (of containerd,
// inherited by the shim) listing, separated by ',', the registries the shim
// may ask for a container image's cosign signatures (the tag
// sha256-<hex>.sig beside the image, as 'cosign sign' stores it), e.g.
// "ghcr.io,registry.example.com:5000". An entry written "http://HOST" may
// be reached over plain HTTP. Unset: the shim asks no registry, and an
// image is signed only through the signature annotations.
//
// The shim runs as root and the image name is the pod author's: the list
// keeps a pod from making the node connect where its admin did not allow.
const SignatureRegistriesEnv = "BULWARK_SIGNATURE_REGISTRIES"

// registryLookupTimeout bounds one signature lookup.
const registryLookupTimeout = 30 * time.Second

// signatureRegistry finds the registry of image (containerd's image name,
// "HOST/REPO:TAG" or "HOST/REPO@DIGEST") in allowed (SignatureRegistriesEnv's
// value). It returns the image's repository, whether plain HTTP is allowed,
// and whether the registry is listed at all.
func signatureRegistry(image, allowed string) (repo string, insecure, ok bool, err error) {
	if allowed == "" {
		return "", false, false, nil
	}
	ref, err := name.ParseReference(image)
	if err != nil {
		return "", false, false, fmt.Errorf("%w: image name %q: %v", errImage, trunc(image), err)
	}
	host := ref.Context().RegistryStr()
	for _, e := range strings.Split(allowed, ",") {
		e = strings.TrimSpace(e)
		plain := strings.HasPrefix(e, "http://")
		e = strings.TrimPrefix(e, "http://")
		if e == "docker.io" {
			e = name.DefaultRegistry
		}
		if e != "" && e == host {
			return ref.Context().Name(), plain, true, nil
		}
	}
	return "", false, false, nil
}

// addRegistrySignatures looks up the cosign signatures of the image (named
// image in containerd, its measured manifest digest given) in its registry,
// if the node allows that registry, and writes them into the exported
// layout at dir, where the launch finds them. It returns how many were
// found. A registry that cannot be read fails the container: the node's
// admin asked for its signatures.
func addRegistrySignatures(ctx context.Context, image, digest, dir, allowed string) (int, error) {
	repo, insecure, ok, err := signatureRegistry(image, allowed)
	if err != nil || !ok {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, registryLookupTimeout)
	defer cancel()
	sigs, err := registry.Signatures(ctx, repo, digest, registry.Options{Insecure: insecure})
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v (the registry is in %s; check that the node reaches it)", errImage, image, err, SignatureRegistriesEnv)
	}
	if err := registry.AppendLayoutSignatures(dir, sigs); err != nil {
		return 0, fmt.Errorf("%w: %s: %v", errImage, image, err)
	}
	return len(sigs), nil
}
