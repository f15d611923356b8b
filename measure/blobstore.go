package measure

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// blobStore gives read access to the files of an image source: an OCI
// layout directory, or the members of a tar archive.
type blobStore interface {
	// open opens the named file ("index.json", "blobs/sha256/<hex>", ...)
	// and returns its size.
	open(name string) (io.ReadCloser, int64, error)
	// has reports whether the named file exists.
	has(name string) bool
	Close() error
}

// errNotExist is returned by open for a missing file.
var errNotExist = errors.New("no such file in the image")

type dirStore struct{ root string }

func (d *dirStore) path(name string) string { return filepath.Join(d.root, filepath.FromSlash(name)) }

func (d *dirStore) open(name string) (io.ReadCloser, int64, error) {
	f, err := os.Open(d.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, fmt.Errorf("%s: %w", name, errNotExist)
	}
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s: not a regular file", name)
	}
	return f, fi.Size(), nil
}

func (d *dirStore) has(name string) bool {
	fi, err := os.Stat(d.path(name))
	return err == nil && fi.Mode().IsRegular()
}

func (d *dirStore) Close() error { return nil }

// tarStore indexes a tar archive once (member name → offset and size) and
// then reads members in place with section readers, so any member can be
// read, and read again, without rescanning the archive.
type tarStore struct {
	f       *os.File
	entries map[string]tarEntry
}

type tarEntry struct {
	off, size int64
	link      string // for hard and symbolic links: the target member
}

const (
	maxTarEntries = 1 << 16
	maxLinkHops   = 8
)

func openTarStore(p string) (*tarStore, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	ts := &tarStore{f: f, entries: map[string]tarEntry{}}
	if err := ts.index(); err != nil {
		f.Close()
		return nil, fmt.Errorf("reading tar archive %s: %w", p, err)
	}
	return ts, nil
}

func cleanMember(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func (t *tarStore) index() error {
	var magic [4]byte
	if _, err := io.ReadFull(t.f, magic[:]); err != nil {
		return fmt.Errorf("too short to be a tar archive: %w", err)
	}
	if magic[0] == 0x1f && magic[1] == 0x8b || string(magic[:]) == "\x28\xb5\x2f\xfd" {
		return errors.New("the archive is compressed: decompress it first (e.g. gunzip or zstd -d) and pass the .tar")
	}
	if _, err := t.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	tr := tar.NewReader(t.f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if len(t.entries) >= maxTarEntries {
			return fmt.Errorf("more than %d members", maxTarEntries)
		}
		name := cleanMember(hdr.Name)
		var e tarEntry
		switch hdr.Typeflag {
		case tar.TypeReg:
			// tar.Reader reads no further than the header, so the file's
			// position is where the member's data starts.
			off, err := t.f.Seek(0, io.SeekCurrent)
			if err != nil {
				return err
			}
			e = tarEntry{off: off, size: hdr.Size}
		case tar.TypeLink:
			e = tarEntry{link: cleanMember(hdr.Linkname)}
		case tar.TypeSymlink:
			target := hdr.Linkname
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(name), target)
			}
			e = tarEntry{link: cleanMember(target)}
		default:
			continue // directories and the like carry no blobs
		}
		if _, dup := t.entries[name]; dup {
			return fmt.Errorf("member %q appears twice (ambiguous archive)", truncate(name))
		}
		t.entries[name] = e
	}
	return nil
}

func (t *tarStore) resolve(name string) (tarEntry, error) {
	e, ok := t.entries[name]
	for hops := 0; ok && e.link != ""; hops++ {
		if hops == maxLinkHops {
			return tarEntry{}, fmt.Errorf("%s: too many links", name)
		}
		e, ok = t.entries[e.link]
	}
	if !ok {
		return tarEntry{}, fmt.Errorf("%s: %w", name, errNotExist)
	}
	return e, nil
}

func (t *tarStore) open(name string) (io.ReadCloser, int64, error) {
	e, err := t.resolve(name)
	if err != nil {
		return nil, 0, err
	}
	return io.NopCloser(io.NewSectionReader(t.f, e.off, e.size)), e.size, nil
}

func (t *tarStore) has(name string) bool {
	_, err := t.resolve(name)
	return err == nil
}

func (t *tarStore) Close() error { return t.f.Close() }
