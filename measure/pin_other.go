//go:build !linux

package measure

import (
	"context"
	"errors"
)

var errNoMemfd = errors.New("pinning needs Linux memfds (memfd_create with sealing)")

// Pin is only available on Linux.
func Pin(ctx context.Context, path string, a Alg) (*Pinned, error) { return nil, errNoMemfd }

// PinBytes is only available on Linux.
func PinBytes(name string, data []byte, a Alg) (*Pinned, error) { return nil, errNoMemfd }
