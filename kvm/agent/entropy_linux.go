package agent

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// addEntropy is ioctl(fd, RNDADDENTROPY, &rand_pool_info): it mixes data
// into the kernel's input pool and credits it as entropy (8 bits a byte:
// the host drew it from its own CSPRNG). fd is /dev/urandom (or random)
// opened for writing; it needs CAP_SYS_ADMIN (the agent is PID 1, root).
func addEntropy(fd int, data []byte) error {
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	buf := make([]byte, 8+len(data)+3)
	binary.NativeEndian.PutUint32(buf[0:], uint32(8*len(data)))
	binary.NativeEndian.PutUint32(buf[4:], uint32(len(data)))
	copy(buf[8:], data)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(unix.RNDADDENTROPY), uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return errno
	}
	return nil
}
