package launchercmd

import (
	"errors"
	"io/fs"
	"os"
	"regexp"
	"strings"

	"github.com/bulwark-project/bulwark/internal/cli"
)

// registryRef matches what reads as a registry reference rather than a
// path: a scheme (docker://), a registry host (with a dot or a port, or
// localhost) as the first component, a :tag after the last slash, or a
// @sha256: digest.
var registryRef = regexp.MustCompile(`^[a-z]+://|^(localhost|[^/]*[.:][^/]*)/[^/]|^[^/]+(/[^/]+)*:[\w][\w.-]*$|@sha256:[0-9a-f]+$`)

// isRegistryRef reports whether an --image is a registry reference: it does
// not exist on disk, does not start like a path, and reads as one.
func isRegistryRef(image string) bool {
	if image == "" || strings.HasPrefix(image, ".") || strings.HasPrefix(image, "/") {
		return false
	}
	if _, err := os.Stat(image); !errors.Is(err, fs.ErrNotExist) {
		return false
	}
	return registryRef.MatchString(image)
}

// checkImageRef refuses an --image that reads as a registry reference
// (docker.io/library/alpine:3.20) for the commands that read local images
// only, saying how to fetch it; the plain "stat: no such file or directory"
// did not say so. 'launcher run' pulls such a reference itself.
func checkImageRef(image string) error {
	if !isRegistryRef(image) {
		return nil
	}
	ref := strings.TrimPrefix(image, "docker://")
	return cli.Usagef("--image %s: no such file or directory, and it reads as a registry reference: "+
		"this command reads a local OCI layout directory, an OCI archive or a docker-save tarball. "+
		"Fetch it first with 'launcher image pull %s -o DIR' (or 'skopeo copy docker://%s oci:DIR'), and give DIR",
		image, ref, ref)
}
