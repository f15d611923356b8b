package kvm

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// concatInitrd writes the base initramfs followed by the image initramfs
// into a sealed memfd (nothing can change it after this), which QEMU reads
// through /proc/self/fd/N.
func concatInitrd(base *os.File, basePath string, image []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("bulwark-initrd", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("kvm: memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "bulwark-initrd")
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	var src io.Reader
	if base != nil {
		src = io.NewSectionReader(base, 0, 1<<40)
	} else {
		bf, err := os.Open(basePath)
		if err != nil {
			return nil, fmt.Errorf("kvm: base initramfs: %w", err)
		}
		defer bf.Close()
		src = bf
	}
	n, err := io.Copy(f, src)
	if err != nil {
		return nil, fmt.Errorf("kvm: copying the base initramfs: %w", err)
	}
	if n == 0 {
		return nil, fmt.Errorf("kvm: the base initramfs is empty")
	}
	if n%4 != 0 { // cpio archives are concatenated on 4-byte boundaries
		if _, err := f.Write(make([]byte, 4-n%4)); err != nil {
			return nil, err
		}
	}
	if _, err := f.Write(image); err != nil {
		return nil, fmt.Errorf("kvm: writing the image initramfs: %w", err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL); err != nil {
		return nil, fmt.Errorf("kvm: sealing the initramfs: %w", err)
	}
	ok = true
	return f, nil
}
