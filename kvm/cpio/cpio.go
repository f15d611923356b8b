// Package cpio writes "newc" (SVR4, no CRC) cpio archives, the format the
// Linux kernel unpacks as an initramfs. It writes only what it is given, in
// the order given, with the metadata given: deterministic archives are the
// caller's choice of order, times and owners (see kvm.BuildBaseInitramfs).
package cpio

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// Mode type bits as stored in a newc header (the classic stat values).
const (
	TypeMask    = 0o170000
	TypeSocket  = 0o140000
	TypeSymlink = 0o120000
	TypeReg     = 0o100000
	TypeBlock   = 0o060000
	TypeDir     = 0o040000
	TypeChar    = 0o020000
	TypeFIFO    = 0o010000
)

// Header is one archive entry.
type Header struct {
	Name     string // path without a leading "/", e.g. "bin/sh"
	Mode     uint32 // type bits | permission bits (including setuid/setgid/sticky)
	UID, GID uint32
	NLink    uint32 // 0 means 1 (2 for directories)
	MTime    int64  // seconds since the epoch
	Size     int64  // body size: the file's bytes, or the symlink target's length
	Ino      uint32 // 0 means the writer assigns one; equal Ino (with NLink>1) marks hard links
	DevMajor uint32 // device of the archived file (informational)
	DevMinor uint32
	// RDevMajor and RDevMinor are the device numbers of a char/block device node.
	RDevMajor, RDevMinor uint32
}

// Writer writes a newc archive. Call WriteHeader, then write exactly Size
// bytes of body, for each entry; Close writes the trailer. Not safe for
// concurrent use.
type Writer struct {
	w       io.Writer
	off     int64
	remain  int64 // body bytes still expected for the current entry
	pad     int64 // padding after the current body
	nextIno uint32
	closed  bool
}

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, nextIno: 1 << 20} }

// ErrWriteTooLong is returned when more than Size body bytes are written.
var ErrWriteTooLong = errors.New("cpio: write too long")

func (w *Writer) write(b []byte) error {
	n, err := w.w.Write(b)
	w.off += int64(n)
	return err
}

func (w *Writer) finishEntry() error {
	if w.remain > 0 {
		return fmt.Errorf("cpio: previous entry is %d bytes short", w.remain)
	}
	if w.pad > 0 {
		if err := w.write(make([]byte, w.pad)); err != nil {
			return err
		}
		w.pad = 0
	}
	return nil
}

// WriteHeader starts a new entry.
func (w *Writer) WriteHeader(h *Header) error {
	if w.closed {
		return errors.New("cpio: write after close")
	}
	if err := w.finishEntry(); err != nil {
		return err
	}
	name := strings.TrimPrefix(h.Name, "/")
	if name == "" || strings.IndexByte(name, 0) >= 0 || name == "TRAILER!!!" {
		return fmt.Errorf("cpio: bad entry name %q", h.Name)
	}
	if h.Size < 0 || h.Size > 0xffffffff {
		return fmt.Errorf("cpio: %s: size %d does not fit a newc header", name, h.Size)
	}
	if h.Mode&TypeMask == 0 {
		return fmt.Errorf("cpio: %s: mode %#o has no file type", name, h.Mode)
	}
	ino := h.Ino
	if ino == 0 {
		ino = w.nextIno
		w.nextIno++
	}
	nlink := h.NLink
	if nlink == 0 {
		nlink = 1
		if h.Mode&TypeMask == TypeDir {
			nlink = 2
		}
	}
	if h.MTime < 0 || h.MTime > 0xffffffff {
		return fmt.Errorf("cpio: %s: mtime %d does not fit a newc header", name, h.MTime)
	}
	if err := w.header(name, ino, h.Mode, h.UID, h.GID, nlink, uint32(h.MTime), uint32(h.Size),
		h.DevMajor, h.DevMinor, h.RDevMajor, h.RDevMinor); err != nil {
		return err
	}
	w.remain = h.Size
	w.pad = pad4(w.off + h.Size)
	return nil
}

func (w *Writer) header(name string, ino, mode, uid, gid, nlink, mtime, size, maj, min, rmaj, rmin uint32) error {
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, uid, gid, nlink, mtime, size, maj, min, rmaj, rmin, len(name)+1, 0)
	if err := w.write([]byte(hdr)); err != nil {
		return err
	}
	if err := w.write(append([]byte(name), 0)); err != nil {
		return err
	}
	if p := pad4(w.off); p > 0 {
		return w.write(make([]byte, p))
	}
	return nil
}

func pad4(n int64) int64 { return (4 - n%4) % 4 }

// Write writes body bytes of the current entry.
func (w *Writer) Write(p []byte) (int, error) {
	if int64(len(p)) > w.remain {
		return 0, fmt.Errorf("%w: %d bytes left", ErrWriteTooLong, w.remain)
	}
	n, err := w.w.Write(p)
	w.off += int64(n)
	w.remain -= int64(n)
	return n, err
}

// WriteFile writes a whole entry: h.Size is set from len(body).
func (w *Writer) WriteFile(h Header, body []byte) error {
	h.Size = int64(len(body))
	if err := w.WriteHeader(&h); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

// Close writes the trailer entry. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	if err := w.finishEntry(); err != nil {
		return err
	}
	w.closed = true
	return w.header("TRAILER!!!", 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0)
}

// ModeFromFS converts an fs.FileMode to newc mode bits.
func ModeFromFS(m fs.FileMode) uint32 {
	mode := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	switch {
	case m.IsDir():
		mode |= TypeDir
	case m&fs.ModeSymlink != 0:
		mode |= TypeSymlink
	case m&fs.ModeNamedPipe != 0:
		mode |= TypeFIFO
	case m&fs.ModeSocket != 0:
		mode |= TypeSocket
	case m&fs.ModeCharDevice != 0:
		mode |= TypeChar
	case m&fs.ModeDevice != 0:
		mode |= TypeBlock
	default:
		mode |= TypeReg
	}
	return mode
}
