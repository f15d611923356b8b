//go:build !unix

package fsutil

import (
	"context"
	"errors"
)

// Lock is not available on this platform.
func Lock(context.Context, string) (func(), error) {
	return nil, errors.New("file locks need a unix system")
}
