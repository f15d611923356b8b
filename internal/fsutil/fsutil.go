// Package fsutil holds the two file operations every part of Bulwark needs:
// reading a file that may be large or hostile without ever reading more than
// a limit, and writing a file atomically so a reader (or a crash) never sees
// half of it.
package fsutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ReadFileLimit reads the whole of a regular file of at most limit bytes.
// A larger file is an error, never silently truncated.
func ReadFileLimit(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes, larger than the %d byte limit", path, st.Size(), limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s grew larger than the %d byte limit while being read", path, limit)
	}
	return b, nil
}

// WriteFileAtomic writes data to path with the given mode: into a temporary
// file in the same directory, synced, then renamed over path (and the
// directory synced), so path holds either the old or the new content.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	return write(path, data, mode, true)
}

// WriteFileNew is WriteFileAtomic for a file that must not exist yet: it
// fails with an error matching os.ErrExist rather than replace one, with no
// window between the check and the write.
func WriteFileNew(path string, data []byte, mode os.FileMode) error {
	return write(path, data, mode, false)
}

func write(path string, data []byte, mode os.FileMode, replace bool) error {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return fmt.Errorf("writing %s: it is a directory; give a file name", path)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(mode)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if replace {
		err = os.Rename(tmp.Name(), path)
	} else if err = os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		err = writeExclusive(path, data, mode) // a file system without hard links
	}
	if le := (*os.LinkError)(nil); errors.As(err, &le) {
		err = le.Err // its text names the temporary file, not the caller's path
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func writeExclusive(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
