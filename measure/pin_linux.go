package measure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// seals are the seals every pinned memfd carries: no writes, no growing,
// no shrinking, and no changing the seals.
const seals = unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL

// maxPinSize bounds what Pin reads into memory (kernels and initrds are tens
// of MiB; this is a guard against pointing it at a disk image).
const maxPinSize = 2 << 30

// Pin reads the regular file at path exactly once into a new memfd, hashing
// the same bytes while it copies them, then seals the memfd (write, grow,
// shrink, seal). The returned Pinned's digest is therefore the digest of
// what any later reader of the memfd sees, whatever happens to path. Close
// the Pinned when done.
func Pin(ctx context.Context, path string, a Alg) (*Pinned, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	src, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pin %s: %w", path, err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return nil, fmt.Errorf("pin %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("pin %s: not a regular file", path)
	}
	p, err := pin(ctx, baseName(path), io.LimitReader(src, maxPinSize+1), a)
	if err != nil {
		return nil, fmt.Errorf("pin %s: %w", path, err)
	}
	return p, nil
}

// PinBytes copies data (e.g. an initramfs built in memory) into a sealed
// memfd named name and measures it, like Pin.
func PinBytes(name string, data []byte, a Alg) (*Pinned, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	p, err := pin(context.Background(), name, bytesReader(data), a)
	if err != nil {
		return nil, fmt.Errorf("pin %s: %w", name, err)
	}
	return p, nil
}

func pin(ctx context.Context, name string, r io.Reader, a Alg) (*Pinned, error) {
	w, err := newPinWriter(name)
	if err != nil {
		return nil, err
	}
	h := a.New()
	// Hash each chunk, then write that same chunk: the memfd receives the
	// bytes that were hashed, never a second read of the source.
	n, err := copyCtx(ctx, io.MultiWriter(h, w), r, make([]byte, bufSize))
	if err == nil && n > maxPinSize {
		err = fmt.Errorf("larger than %d bytes", int64(maxPinSize))
	}
	if err != nil {
		w.abort()
		return nil, err
	}
	return w.seal(FormatDigest(a, h.Sum(nil)))
}

// pinWriter fills a new memfd; seal turns it into a Pinned. The caller
// hashes what it writes (the digest passed to seal); abort discards it.
type pinWriter struct {
	name string
	f    *os.File
	n    int64
}

func newPinWriter(name string) (*pinWriter, error) {
	fd, err := unix.MemfdCreate("bulwark:"+name, unix.MFD_ALLOW_SEALING|unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	return &pinWriter{name: name, f: os.NewFile(uintptr(fd), "memfd:bulwark:"+name)}, nil
}

func (w *pinWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *pinWriter) abort() { w.f.Close() }

// seal applies every seal, checks they hold, and rewinds the memfd.
func (w *pinWriter) seal(digest string) (*Pinned, error) {
	if _, err := unix.FcntlInt(w.f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		w.abort()
		return nil, fmt.Errorf("sealing memfd: %w", err)
	}
	got, err := unix.FcntlInt(w.f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		w.abort()
		return nil, fmt.Errorf("reading memfd seals: %w", err)
	}
	if got&seals != seals {
		w.abort()
		return nil, errors.New("memfd seals not applied")
	}
	if _, err := w.f.Seek(0, io.SeekStart); err != nil {
		w.abort()
		return nil, err
	}
	return &Pinned{Name: w.name, Digest: digest, Size: w.n, File: w.f}, nil
}
