// What a container's OCI spec sets over its image's config: environment,
// working directory and user, passed to the launch as 'launcher run -e,
// -w, -u' pass them (measured into the launch event, judged by the
// policy).

package shim

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/bulwark-project/bulwark/measure"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// defaultPath is the PATH containerd puts in a spec whose image sets none
// (oci.WithDefaultPathEnv); the guest agent gives such a workload the same
// (agent.DefaultPath), so it is not a variable set over the image's.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// maxUserFile bounds what is read of the image's /etc/passwd and
// /etc/group (as the guest agent reads them).
const maxUserFile = 4 << 20

// overrides is what a container's spec sets over its image's config, in
// the launch's terms (launch.Options Env, WorkingDir, User).
type overrides struct {
	// Env are the KEY=VALUE entries the spec adds to the image's
	// environment or gives another value, in the spec's order.
	Env []string
	// WorkingDir is the spec's cwd when it is not the image's.
	WorkingDir string
	// User is "UID:GID" when the spec's ids are not those the image's
	// user resolves to.
	User string
}

// userFiles reads the image's /etc/passwd and /etc/group (nil: absent).
type userFiles func() (passwd, group []byte, err error)

// processOverrides computes what spec process p sets over image config
// img. containerd builds p.Env from the image's environment, the
// container's own variables and, for a CRI container, HOSTNAME (the
// pod's hostname); p.Cwd from the container's or the image's working
// directory; p.User from the container's or the image's user, resolved to
// ids in the image's /etc/passwd and /etc/group. What is the image's
// stays the image's (the guest applies it from the verified image); what
// differs is an override:
//
//   - a variable absent from the image's environment, or with another
//     value. HOSTNAME is not carried when isPodHostname says its value is
//     the pod's hostname (the CRI's own; the guest's hostname is the
//     sandbox's, and HOSTNAME says so), nor PATH with containerd's
//     default when the image sets no PATH (the guest's default is the
//     same). Variables of the image missing from the spec stay.
//   - a working directory other than the image's ("/" when it has none).
//   - uid and gid other than those the image's user resolves to (0:0 when
//     it has none), given as "UID:GID": the CRI passes numbers, never
//     names. Additional gids are not carried (the guest's processes get
//     none but the pod's secrets group).
//
// Errors name the spec's field.
func processOverrides(p *specs.Process, img ocispec.ImageConfig, isPodHostname func(string) bool, files userFiles) (overrides, error) {
	var o overrides
	if p == nil {
		return o, nil
	}
	var err error
	if o.Env, err = envOverrides(p.Env, img.Env, isPodHostname); err != nil {
		return o, err
	}
	if p.Cwd != "" {
		cwd := p.Cwd
		if path.IsAbs(cwd) {
			cwd = path.Clean(cwd)
		}
		if err := measure.CheckWorkingDir(cwd); err != nil {
			return o, fmt.Errorf("%w: process.cwd: %v", errBadSpec, err)
		}
		imgDir := img.WorkingDir
		if imgDir == "" {
			imgDir = "/"
		}
		if path.IsAbs(imgDir) {
			imgDir = path.Clean(imgDir)
		}
		if cwd != imgDir {
			o.WorkingDir = cwd
		}
	}
	uid, gid := p.User.UID, p.User.GID
	if uid > maxID || gid > maxID {
		return o, fmt.Errorf("%w: process.user: uid %d, gid %d: at most %d", errBadSpec, uid, gid, maxID)
	}
	iuid, igid, rerr := resolveImageUser(img.User, files)
	if rerr != nil || iuid != uid || igid != gid {
		// The image's user does not resolve to these ids (or not at
		// all: then the spec's ids are what containerd asks for).
		o.User = fmt.Sprintf("%d:%d", uid, gid)
	}
	return o, nil
}

// maxID is the largest uid or gid containerd and runc accept.
const maxID = 1<<31 - 1

// envOverrides is processOverrides' environment part.
func envOverrides(spec, image []string, isPodHostname func(string) bool) ([]string, error) {
	img := map[string]string{}
	for _, kv := range image {
		k, v, _ := strings.Cut(kv, "=")
		img[k] = v
	}
	var out []string
	idx := map[string]int{}
	total := 0
	for i, kv := range spec {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%w: process.env[%d] %q: want KEY=VALUE", errBadSpec, i, trunc(kv))
		}
		if err := measure.CheckEnvKey(k); err != nil {
			return nil, fmt.Errorf("%w: process.env[%d]: %v", errBadSpec, i, err)
		}
		if err := measure.CheckEnvValue(v); err != nil {
			return nil, fmt.Errorf("%w: process.env %s: %v", errBadSpec, k, err)
		}
		iv, inImage := img[k]
		switch {
		case inImage && iv == v:
			continue
		case k == "HOSTNAME" && isPodHostname != nil && isPodHostname(v):
			continue
		case k == "PATH" && !inImage && v == defaultPath:
			continue
		}
		if j, ok := idx[k]; ok { // the last one counts, as in the guest
			total -= len(out[j])
			out[j] = kv
		} else {
			idx[k] = len(out)
			out = append(out, kv)
		}
		total += len(kv)
	}
	if len(out) > measure.MaxEnv {
		return nil, fmt.Errorf("%w: process.env: %d variables over the image's, at most %d", errBadSpec, len(out), measure.MaxEnv)
	}
	if total > measure.MaxEnvTotal {
		return nil, fmt.Errorf("%w: process.env: %d bytes of variables over the image's, at most %d", errBadSpec, total, measure.MaxEnvTotal)
	}
	return out, nil
}

// resolveImageUser resolves an image config's User ("", "uid", "name",
// "user:group", each part a number or a name) to ids as containerd's
// oci.WithUser does and as the guest agent does: a name through the
// image's /etc/passwd (its uid and gid) or /etc/group; a lone uid takes
// its gid from /etc/passwd, 0 when it has no entry. Files are read only
// when a name or a lone uid needs them.
func resolveImageUser(user string, files userFiles) (uid, gid uint32, err error) {
	if user == "" {
		return 0, 0, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	nu, uErr := parseID(u)
	ng, gErr := parseID(g)
	if uErr == nil && hasGroup && gErr == nil {
		return nu, ng, nil
	}
	if files == nil {
		return 0, 0, errors.New("the image's user files are not available")
	}
	passwd, group, err := files()
	if err != nil {
		return 0, 0, err
	}
	if uErr == nil {
		uid = nu
		if e := findEntry(passwd, 6, 2, u); e != nil {
			gid, _ = parseID(e[3])
		}
	} else {
		e := findEntry(passwd, 6, 0, u)
		if e == nil {
			return 0, 0, fmt.Errorf("user %q is not in the image's /etc/passwd", trunc(u))
		}
		var err1, err2 error
		uid, err1 = parseID(e[2])
		gid, err2 = parseID(e[3])
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("user %q: bad /etc/passwd entry in the image", trunc(u))
		}
	}
	if !hasGroup {
		return uid, gid, nil
	}
	if gErr == nil {
		return uid, ng, nil
	}
	e := findEntry(group, 3, 0, g)
	if e == nil {
		return 0, 0, fmt.Errorf("group %q is not in the image's /etc/group", trunc(g))
	}
	if gid, err = parseID(e[2]); err != nil {
		return 0, 0, fmt.Errorf("group %q: bad /etc/group entry in the image", trunc(g))
	}
	return uid, gid, nil
}

// parseID parses a uid or gid.
func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > maxID {
		return 0, fmt.Errorf("%q is not an id", trunc(s))
	}
	return uint32(n), nil
}

// findEntry returns the fields of the first line of a passwd or group
// file whose field col is v; passwd lines need 6 fields, group lines 3
// (as the guest agent reads them).
func findEntry(file []byte, minFields, col int, v string) []string {
	sc := bufio.NewScanner(bytes.NewReader(file))
	sc.Buffer(nil, maxUserFile)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if f := strings.Split(l, ":"); len(f) >= minFields && f[col] == v {
			return f
		}
	}
	return nil
}

// layoutUserFiles reads /etc/passwd and /etc/group from the image in the
// OCI layout at dir (the one the shim exported and the host service
// measures): its layers flattened, whiteouts honoured, as the guest's root
// is built.
func layoutUserFiles(dir string) userFiles {
	return func() (passwd, group []byte, err error) {
		p, err := layout.FromPath(dir)
		if err != nil {
			return nil, nil, fmt.Errorf("reading the image's user files: %w", err)
		}
		idx, err := p.ImageIndex()
		if err != nil {
			return nil, nil, fmt.Errorf("reading the image's user files: %w", err)
		}
		m, err := idx.IndexManifest()
		if err != nil || len(m.Manifests) != 1 {
			return nil, nil, fmt.Errorf("reading the image's user files: want one manifest in the layout (%v)", err)
		}
		img, err := idx.Image(m.Manifests[0].Digest)
		if err != nil {
			return nil, nil, fmt.Errorf("reading the image's user files: %w", err)
		}
		rc := mutate.Extract(img)
		defer rc.Close()
		return findUserFiles(rc)
	}
}

// findUserFiles reads etc/passwd and etc/group (regular files) from a
// flattened root's tar stream.
func findUserFiles(r io.Reader) (passwd, group []byte, err error) {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return passwd, group, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading the image's user files: %w", err)
		}
		var dst *[]byte
		switch path.Clean("/" + h.Name) {
		case "/etc/passwd":
			dst = &passwd
		case "/etc/group":
			dst = &group
		default:
			continue
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(tr, maxUserFile))
		if err != nil {
			return nil, nil, fmt.Errorf("reading the image's user files: %w", err)
		}
		*dst = b
	}
}

// criHostname says which HOSTNAME values of a CRI container's spec are the
// CRI's own: the pod's hostname (its sandbox container's spec's, podHost)
// or, for a pod without one, containerd's host's. The guest's hostname is
// the sandbox's and its HOSTNAME says so; such a value is not a variable
// the pod sets. A container that is not a CRI pod's has none: its
// HOSTNAME, if any, is its creator's.
func criHostname(s *specs.Spec, podHost string) func(string) bool {
	if s.Annotations[annotationCRIType] != "container" {
		return nil
	}
	host, _ := os.Hostname()
	return func(v string) bool {
		return v != "" && (v == podHost || v == host)
	}
}
