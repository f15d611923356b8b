package store

import (
	"context"
	"errors"
)

// OpenPostgres connects to the PostgreSQL database named by dsn and creates
// or migrates the schema.
func OpenPostgres(ctx context.Context, dsn string, opts Options) (Store, error) {
	return nil, errors.New("store: postgres store not implemented yet")
}
