package store

import (
	"context"
	"os"

	bolt "go.etcd.io/bbolt"
)

// OpenEmbeddedUnbatched opens an embedded store that commits (and fsyncs)
// every write alone: the benchmarks' baseline.
func OpenEmbeddedUnbatched(ctx context.Context, dir string) (Store, error) {
	s, err := OpenEmbedded(ctx, dir, Options{})
	if err != nil {
		return nil, err
	}
	unclassified(s).(*embedded).unbatched = true
	return s, nil
}

// EmbeddedSize returns the embedded store's file size and how many bytes
// of it are pages in use (the high-water mark less the free pages).
func EmbeddedSize(s Store) (file, used int64, err error) {
	e := unclassified(s).(*embedded)
	fi, err := os.Stat(e.db.Path())
	if err != nil {
		return 0, 0, err
	}
	err = e.db.View(func(tx *bolt.Tx) error {
		used = tx.Size() - int64(e.db.Stats().FreeAlloc)
		return nil
	})
	return fi.Size(), used, err
}
