package embedded

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrStoreInUse: the embedded store's file is locked by another process
// (an attestd serving on it, or another compaction).
var ErrStoreInUse = errors.New("the embedded store is in use by another process")

// compactLockWait is how long Compact waits for the file lock
// before it reports ErrStoreInUse: a stopped attestd holds no lock at all.
const compactLockWait = 100 * time.Millisecond

// CompactResult gives the store file's size before and after compaction.
type CompactResult struct {
	Before, After int64
}

// Compact rewrites the embedded store in dir into a new file that
// holds only the pages in use, and puts it in place of the old one. bbolt
// reuses the pages that purged records free but never gives them back to
// the file system; this does, offline. It takes the store's exclusive lock
// for the whole run, so it refuses (ErrStoreInUse) while attestd serves on
// dir, and attestd cannot start on dir until it is done. A crash midway
// leaves the old file in place (and a dir/File.compact to ignore).
func Compact(dir string) (CompactResult, error) {
	path := filepath.Join(dir, File)
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return CompactResult{}, fmt.Errorf("store: no embedded store at %s: %w", path, fs.ErrNotExist)
	}
	if err != nil {
		return CompactResult{}, fmt.Errorf("store: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return CompactResult{}, fmt.Errorf("store: %s is not a store file: %w", path, store.ErrInvalid)
	}
	src, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: compactLockWait})
	if errors.Is(err, berrors.ErrTimeout) {
		return CompactResult{}, fmt.Errorf("store: %s is locked: %w (stop attestd on this data directory first)", path, ErrStoreInUse)
	}
	if err != nil {
		return CompactResult{}, fmt.Errorf("store: opening %s: %w", path, err)
	}
	defer src.Close()
	if err := src.View(func(tx *bolt.Tx) error {
		if m := tx.Bucket(bktMeta); m == nil || string(m.Get([]byte("schema"))) == "" {
			return fmt.Errorf("%s is not an attestd store (no schema version): %w", path, store.ErrInvalid)
		}
		return nil
	}); err != nil {
		return CompactResult{}, fmt.Errorf("store: %w", err)
	}
	tmp := path + ".compact"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return CompactResult{}, fmt.Errorf("store: removing a leftover %s: %w", tmp, err)
	}
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: compactLockWait, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return CompactResult{}, fmt.Errorf("store: creating %s: %w", tmp, err)
	}
	if err := bolt.Compact(dst, src, 64<<20); err != nil {
		dst.Close()
		os.Remove(tmp)
		return CompactResult{}, fmt.Errorf("store: compacting %s: %w", path, err)
	}
	if err := dst.Close(); err != nil { // each Compact commit was fsynced
		os.Remove(tmp)
		return CompactResult{}, fmt.Errorf("store: compacting %s: %w", path, err)
	}
	// Still holding the old file's lock: no attestd opens either file
	// until the new one is in place.
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return CompactResult{}, fmt.Errorf("store: replacing %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return CompactResult{}, fmt.Errorf("store: syncing %s: %w", dir, err)
		}
	}
	after, err := os.Stat(path)
	if err != nil {
		return CompactResult{}, fmt.Errorf("store: %w", err)
	}
	return CompactResult{Before: fi.Size(), After: after.Size()}, nil
}
