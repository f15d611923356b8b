// Package ociimage builds small OCI images from directories on the host,
// deterministically (fixed timestamps and owners, sorted entries), and writes
// them as OCI image layouts. It is how the demo and the tests make workload
// images without a registry or a container engine; `launcher image build`
// exposes it to users.
package ociimage

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Spec describes an image to build.
type Spec struct {
	// Layers are applied in order. Each is a set of files.
	Layers []Layer
	// Config fields, as in the OCI image config.
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
	// RefName is recorded as the org.opencontainers.image.ref.name annotation
	// in the layout's index (e.g. "demo:latest"); optional.
	RefName string
}

// Layer is one image layer: either the contents of a host directory, or
// explicit entries, or both (entries win on equal paths).
type Layer struct {
	Dir     string  // host directory whose contents become the layer root; optional
	Entries []Entry // explicit entries
}

// Entry is one file in a layer.
type Entry struct {
	Path     string      // path inside the image, e.g. "bin/sh" (no leading slash needed)
	Mode     fs.FileMode // permission bits and type (fs.ModeDir, fs.ModeSymlink)
	Data     []byte      // regular file contents
	Linkname string      // symlink target
	// Whiteout marks Path as deleted from lower layers (OCI ".wh." file).
	Whiteout bool
}

// BusyboxLayer returns a layer holding a static busybox at /bin/busybox with
// symlinks for the given applets (e.g. "sh", "echo", "cat"), read from
// busyboxPath (Debian's busybox-static installs /bin/busybox).
func BusyboxLayer(busyboxPath string, applets ...string) (Layer, error) {
	data, err := readBusybox(busyboxPath)
	if err != nil {
		return Layer{}, err
	}
	l := Layer{Entries: []Entry{
		{Path: "bin", Mode: fs.ModeDir | 0o755},
		{Path: "bin/busybox", Mode: 0o755, Data: data},
		{Path: "tmp", Mode: fs.ModeDir | 0o1777},
		{Path: "etc", Mode: fs.ModeDir | 0o755},
		{Path: "etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n")},
		{Path: "etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
	}}
	have := busyboxApplets(data)
	if have == nil {
		return Layer{}, fmt.Errorf("busybox %s: no applet list found in the binary: is it busybox? (give a static busybox with --busybox-path; on Debian: apt-get install busybox-static)", busyboxPath)
	}
	var unknown []string
	for _, a := range applets {
		if a == "" || strings.Contains(a, "/") {
			return Layer{}, fmt.Errorf("applet name %q is not a plain name", a)
		}
		if _, ok := slices.BinarySearch(have, a); !ok {
			unknown = append(unknown, a)
		}
	}
	if len(unknown) > 0 {
		what := "applet"
		if len(unknown) > 1 {
			what = "applets"
		}
		return Layer{}, fmt.Errorf("busybox %s has no %s %s: give only applets it has (%d of them; '%s --list' shows them)",
			busyboxPath, what, strings.Join(quoteAll(unknown), ", "), len(have), busyboxPath)
	}
	for _, a := range applets {
		l.Entries = append(l.Entries, Entry{Path: "bin/" + a, Mode: fs.ModeSymlink | 0o777, Linkname: "busybox"})
	}
	return l, nil
}

// appletToken is what a busybox applet name is made of ("[", "[[",
// "run-parts", "ssl_client", "linux32").
var appletToken = regexp.MustCompile(`^[a-z0-9_.\[-]+$`)

// busyboxApplets finds the applet names compiled into a busybox binary
// (what 'busybox --list' prints) without running it: busybox keeps them
// as one NUL-separated list in strcmp order, the longest such sorted run
// of name-like strings in the file. It returns nil when there is none of
// at least 8 names.
func busyboxApplets(data []byte) []string {
	var best, cur []string
	for p := range bytes.SplitSeq(data, []byte{0}) {
		s := string(p)
		switch {
		case !appletToken.MatchString(s):
			cur = nil
			continue
		case len(cur) > 0 && cur[len(cur)-1] >= s:
			cur = nil
		}
		cur = append(cur, s)
		if len(cur) > len(best) {
			best = cur
		}
	}
	if len(best) < 8 {
		return nil
	}
	return best
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

// readBusybox reads the busybox binary and makes sure it can be the image's
// /bin/busybox: a non-empty regular file holding a statically linked x86-64
// ELF executable (the layer has no dynamic loader or libc, and the image
// config says linux/amd64). Anything else would build an image whose
// commands cannot run.
func readBusybox(path string) ([]byte, error) {
	const hint = "give a static busybox with --busybox-path; on Debian: apt-get install busybox-static"
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("busybox: %w (%s)", err, hint)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("busybox %s is not a regular file (%s)", path, hint)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("busybox: %w (%s)", err, hint)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("busybox %s is empty (%s)", path, hint)
	}
	if !bytes.HasPrefix(data, []byte(elf.ELFMAG)) {
		return nil, fmt.Errorf("busybox %s is not an ELF executable (%s)", path, hint)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("busybox %s is not a valid ELF file: %v (%s)", path, err, hint)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return nil, fmt.Errorf("busybox %s is an ELF %s, not an executable (%s)", path, f.Type, hint)
	}
	if f.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("busybox %s is built for %s, the image is linux/amd64 (%s)", path, f.Machine, hint)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("busybox %s is dynamically linked; the image has no libc (%s)", path, hint)
		}
	}
	return data, nil
}

// Build assembles the image described by spec.
func Build(spec Spec) (v1.Image, error) {
	if len(spec.Layers) == 0 {
		return nil, errors.New("an image needs at least one layer")
	}
	img := empty.Image
	for i, l := range spec.Layers {
		data, err := layerTar(l)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		}, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = spec.Entrypoint
	cf.Config.Cmd = spec.Cmd
	cf.Config.Env = spec.Env
	cf.Config.WorkingDir = spec.WorkingDir
	cf.Config.User = spec.User
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	return mutate.ConfigMediaType(img, types.OCIConfigJSON), nil
}

// WriteLayout writes img as a new OCI image layout at dir (which must not
// exist or be empty) and returns the manifest digest.
func WriteLayout(dir string, img v1.Image, refName string) (string, error) {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return "", fmt.Errorf("%s is not empty: choose a new directory for the image layout", dir)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return "", err
	}
	var opts []layout.Option
	if refName != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": refName}))
	}
	if err := p.AppendImage(img, opts...); err != nil {
		return "", err
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

// layerRoot resolves a layer's host directory: a symlink to a directory is
// followed (WalkDir does not follow its root, and would see one symlink and
// nothing in it), and anything but a directory is an error, so a mistyped
// layer can never become an empty one.
func layerRoot(dir string) (string, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("layer directory %s: %w", dir, err)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return "", fmt.Errorf("layer directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		what := "a special file"
		if fi.Mode().IsRegular() {
			what = "a regular file"
		}
		if root != filepath.Clean(dir) {
			what += " (via symlink, " + root + ")"
		}
		return "", fmt.Errorf("layer directory %s is %s, not a directory: give the directory whose contents become the layer", dir, what)
	}
	return root, nil
}

// layerTar renders a layer as an uncompressed tar with fixed metadata.
func layerTar(l Layer) ([]byte, error) {
	entries := map[string]Entry{}
	if l.Dir != "" {
		root, err := layerRoot(l.Dir)
		if err != nil {
			return nil, err
		}
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(root, p)
			if err != nil || rel == "." {
				return err
			}
			info, err := os.Lstat(p)
			if err != nil {
				return err
			}
			e := Entry{Path: filepath.ToSlash(rel), Mode: info.Mode()}
			switch {
			case info.Mode().IsRegular():
				if e.Data, err = os.ReadFile(p); err != nil {
					return err
				}
			case info.Mode()&fs.ModeSymlink != 0:
				if e.Linkname, err = os.Readlink(p); err != nil {
					return err
				}
			case info.IsDir():
			default:
				return fmt.Errorf("%s: only files, directories and symlinks can go in a layer", p)
			}
			entries[e.Path] = e
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	for _, e := range l.Entries {
		e.Path = strings.TrimPrefix(filepath.ToSlash(filepath.Clean(e.Path)), "/")
		if e.Path == "" || e.Path == "." || strings.HasPrefix(e.Path, "../") {
			return nil, fmt.Errorf("entry path %q is outside the image root", e.Path)
		}
		entries[e.Path] = e
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := entries[n]
		h := &tar.Header{Name: n, Mode: int64(e.Mode.Perm()), Format: tar.FormatPAX}
		if e.Mode&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		switch {
		case e.Whiteout:
			dir, base := filepath.Split(n)
			h = &tar.Header{Name: dir + ".wh." + base, Mode: 0o644, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		case e.Mode.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, n+"/"
		case e.Mode&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.Linkname
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg && !e.Whiteout {
			if _, err := tw.Write(e.Data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
