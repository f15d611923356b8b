// Package embedded is the store.Store kept in one bbolt file in a data
// directory: attestd's default store, for one attestd process at a time.
// Writes are group-committed (commit.go); records are stored as JSON
// (internal/record, records.go); an older file's layout is migrated when it
// opens (migrate.go); Compact rewrites the file offline (compact.go).
package embedded

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	bolt "go.etcd.io/bbolt"
)

// File is the database file of the embedded store in its directory.
const File = "attestd.db"

var (
	bktNodes   = []byte("nodes")
	bktAtt     = []byte("attestations")
	bktSecrets = []byte("secrets")
	bktAudit   = []byte("audit")
	bktMeta    = []byte("meta")
	// bktLast holds each node's last verdict (record.Last), apart from its
	// record so that an attestation rewrites ~100 bytes, not the EK
	// certificate (schema 2).
	bktLast = []byte("lastverdict")
	// bktLastLog holds last verdicts not yet folded into bktLast, in
	// commit order (lastlog.go, schema 4).
	bktLastLog = []byte("lastlog")
)

// embedded is the bbolt store. Writes go through one committer goroutine
// that groups whatever writes are queued while the previous commit syncs
// into the next transaction ("group commit"): each caller returns only after
// the transaction holding its write has been fsynced, so nothing
// acknowledged is lost, yet one fsync serves many concurrent callers. When
// idle, a write commits at once (no batching delay).
type boltStore struct {
	db  *bolt.DB
	log *slog.Logger
	now func() time.Time

	mu     sync.RWMutex // guards closed; held (R) by senders on ops
	closed bool
	ops    chan *writeOp
	done   chan struct{}

	// unbatched makes every write its own transaction and fsync: the
	// baseline the benchmarks compare group commit against.
	unbatched bool
	onCommit  func(writes int, took time.Duration)
	// updateMu makes each write transaction and its cache updates one
	// step: bbolt serialises the transactions but not what follows them,
	// and a write started in between would read a node older than the
	// file's. Uncontended under the committer, its only caller then.
	updateMu sync.Mutex

	// Quote nonces live in memory only (see IssueNonce).
	nonces nonceTable

	// nodes caches decoded node records as committed (see nodeCache).
	nodes nodeCache
	// last holds the last verdicts not yet folded into bktLast (lastlog.go).
	last lastLog
	// head is the committed head of the audit chain, nil until the first
	// commit that appends (the committer reads the rest of the time).
	headMu sync.Mutex
	head   *store.AuditRecord
}

var _ store.Store = (*boltStore)(nil)

// Open opens (creating if needed, mode 0700) the embedded store in
// dir: one bbolt file, File. Only one process may open it at a time.
func Open(ctx context.Context, dir string, opts store.Options) (store.Store, error) {
	return open(dir, opts, true)
}

// OpenExisting opens the embedded store in dir like Open,
// but only if dir/File already exists: it creates neither the
// directory nor the file. A missing store is an error wrapping
// fs.ErrNotExist that names the file.
func OpenExisting(ctx context.Context, dir string, opts store.Options) (store.Store, error) {
	return open(dir, opts, false)
}

func open(dir string, opts store.Options, create bool) (store.Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("store: embedded store needs a data directory: %w", store.ErrInvalid)
	}
	path := filepath.Join(dir, File)
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: creating data directory: %w", err)
		}
	} else {
		fi, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("store: no embedded store at %s: %w", path, fs.ErrNotExist)
		} else if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("store: %s is not a store file: %w", path, store.ErrInvalid)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("store: opening %s (is another attestd using this data directory?): %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bktNodes, bktAtt, bktSecrets, bktAudit, bktMeta, bktLast, bktLastLog, bktJoins, bktPrefix, bktPrefixRecs, bktSandboxes, bktDecisions, bktDecisionKeys} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if err := migrateSchema(tx); err != nil {
			return err
		}
		return foldAtOpen(tx)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: initialising %s: %w", path, err)
	}
	s := &boltStore{db: db, log: opts.Logger, now: opts.Now, onCommit: opts.OnCommit, ops: make(chan *writeOp, maxGroup), done: make(chan struct{})}
	s.nonces.perNode = opts.NoncesPerNode()
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.last.lastFold = s.now()
	go s.committer()
	return store.Classified(s), nil
}

func (s *boltStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.ops)
	s.mu.Unlock()
	<-s.done
	return s.db.Close()
}

func (s *boltStore) view(fn func(tx *bolt.Tx) error) error {
	s.mu.RLock() // Close waits for running reads
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	s.last.foldMu.RLock() // it may read bktLast (lastVerdict)
	defer s.last.foldMu.RUnlock()
	return s.db.View(fn)
}
