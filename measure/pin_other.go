//go:build !linux

package measure

import (
	"context"
	"errors"
)

// pinWriter is only available on Linux.
type pinWriter struct{}

func newPinWriter(string) (*pinWriter, error)   { return nil, errNoMemfd }
func (*pinWriter) Write([]byte) (int, error)    { return 0, errNoMemfd }
func (*pinWriter) abort()                       {}
func (*pinWriter) seal(string) (*Pinned, error) { return nil, errNoMemfd }

var errNoMemfd = errors.New("pinning needs Linux memfds (memfd_create with sealing)")

// Pin is only available on Linux.
func Pin(ctx context.Context, path string, a Alg) (*Pinned, error) { return nil, errNoMemfd }

// PinBytes is only available on Linux.
func PinBytes(name string, data []byte, a Alg) (*Pinned, error) { return nil, errNoMemfd }
