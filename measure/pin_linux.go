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
	fd, err := unix.MemfdCreate("bulwark:"+name, unix.MFD_ALLOW_SEALING|unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:bulwark:"+name)
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	h := a.New()
	// Hash each chunk, then write that same chunk: the memfd receives the
	// bytes that were hashed, never a second read of the source.
	n, err := copyCtx(ctx, io.MultiWriter(h, f), r, make([]byte, bufSize))
	if err != nil {
		return nil, err
	}
	if n > maxPinSize {
		return nil, fmt.Errorf("larger than %d bytes", int64(maxPinSize))
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		return nil, fmt.Errorf("sealing memfd: %w", err)
	}
	got, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("reading memfd seals: %w", err)
	}
	if got&seals != seals {
		return nil, errors.New("memfd seals not applied")
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	ok = true
	return &Pinned{Name: name, Digest: FormatDigest(a, h.Sum(nil)), Size: n, File: f}, nil
}
