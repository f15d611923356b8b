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

// checkImageRef refuses an --image that does not exist on disk and reads
// as a registry reference (docker.io/library/alpine:3.20): images are read
// from local files only, and the plain "stat: no such file or directory"
// did not say so. A missing path that looks like a path is left to the
// command, which names it.
func checkImageRef(image string) error {
	if image == "" {
		return nil
	}
	if _, err := os.Stat(image); !errors.Is(err, fs.ErrNotExist) || strings.HasPrefix(image, ".") || strings.HasPrefix(image, "/") {
		return nil
	}
	if !registryRef.MatchString(image) {
		return nil
	}
	return cli.Usagef("--image %s: no such file or directory, and it reads as a registry reference: "+
		"images are read from a local OCI layout directory, an OCI archive or a docker-save tarball; registries are not supported yet. "+
		"Fetch it first, e.g. 'docker pull %s && docker save %s -o image.tar' or 'skopeo copy docker://%s oci:image-dir', and give that",
		image, strings.TrimPrefix(image, "docker://"), strings.TrimPrefix(image, "docker://"), strings.TrimPrefix(image, "docker://"))
}
