package embedded

import (
	"context"
	"os"

	"github.com/bulwark-project/bulwark/internal/store"
	bolt "go.etcd.io/bbolt"
)

// OpenUnbatched opens an embedded store that commits (and fsyncs)
// every write alone: the benchmarks' baseline.
func OpenUnbatched(ctx context.Context, dir string) (store.Store, error) {
	s, err := Open(ctx, dir, store.Options{})
	if err != nil {
		return nil, err
	}
	store.Unclassified(s).(*boltStore).unbatched = true
	return s, nil
}

// Size returns the embedded store's file size and how many bytes
// of it are pages in use (the high-water mark less the free pages).
func Size(s store.Store) (file, used int64, err error) {
	e := store.Unclassified(s).(*boltStore)
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
