package store

import (
	"context"
	"errors"
)

// OpenEmbedded opens (creating if needed) the embedded store in dir.
func OpenEmbedded(ctx context.Context, dir string, opts Options) (Store, error) {
	return nil, errors.New("store: embedded store not implemented yet")
}
