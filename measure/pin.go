package measure

import (
	"fmt"
	"os"
)

// Pinned is an artifact read once into a sealed memfd and measured there.
// The memfd is sealed against writes, growth and shrinking, and the seals
// themselves are sealed, so the bytes behind File are exactly the bytes
// Digest was computed over for as long as the memfd lives.
//
// To hand it to QEMU, pass File in exec.Cmd.ExtraFiles (it is opened with
// close-on-exec, and ExtraFiles is how it is inherited) and give QEMU the
// path ChildPath(i), where i is File's index in ExtraFiles: the child sees
// ExtraFiles[i] as descriptor 3+i. Path() is the same memfd as seen by this
// process. Close releases the memfd; a Pinned is safe for concurrent use by
// readers that use ReadAt, or by children that open the path.
type Pinned struct {
	// Name is a label for errors and for /proc/PID/fd (memfd:NAME).
	Name string
	// Digest is the digest string of the sealed bytes.
	Digest string
	// Size is the number of sealed bytes.
	Size int64
	// File is the sealed memfd (read-only for all practical purposes).
	File *os.File
}

// Path is the memfd's path as seen by this process: /proc/self/fd/N.
func (p *Pinned) Path() string { return fmt.Sprintf("/proc/self/fd/%d", p.File.Fd()) }

// ChildPath is the memfd's path as seen by a child process that inherits
// File as ExtraFiles[i]: /proc/self/fd/<3+i>.
func (p *Pinned) ChildPath(i int) string { return fmt.Sprintf("/proc/self/fd/%d", 3+i) }

// Close closes the memfd. Children that inherited it keep their copy.
func (p *Pinned) Close() error {
	if p == nil || p.File == nil {
		return nil
	}
	return p.File.Close()
}
