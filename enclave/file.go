package enclave

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/bulwark-project/bulwark/internal/fsutil"
)

// FileKeyName is the file the file backend keeps the master key in.
const FileKeyName = "vault-master.key"

// FileBackend keeps the master key in clear in a 0600 file in the data
// directory. DEVELOPMENT ONLY: anyone who can read the data directory (or a
// backup of it) can decrypt every secret. It refuses to work unless
// AllowInsecureFile is set, and warns loudly each time it opens.
type FileBackend struct {
	Dir               string
	AllowInsecureFile bool
	Logger            *slog.Logger // nil: slog.Default()
	Rand              io.Reader    // nil: crypto/rand
}

// NewFileBackend returns the development file backend over dir.
func NewFileBackend(dir string, allowInsecureFile bool, logger *slog.Logger) *FileBackend {
	return &FileBackend{Dir: dir, AllowInsecureFile: allowInsecureFile, Logger: logger}
}

// Name implements Backend.
func (f *FileBackend) Name() string { return "file" }

func (f *FileBackend) check() error {
	if !f.AllowInsecureFile {
		return fmt.Errorf("%w: the file vault backend keeps the master key in clear; it is for development only and needs the explicit insecure-file option (attestd --vault=file --allow-insecure-file-vault)", ErrUnavailable)
	}
	if f.Dir == "" {
		return fmt.Errorf("file backend: no data directory: %w", ErrInvalid)
	}
	l := f.Logger
	if l == nil {
		l = slog.Default()
	}
	l.Warn("INSECURE VAULT: the master key is a plain file; anyone who reads the data directory can decrypt every secret. Never use the file backend in production.", "path", filepath.Join(f.Dir, FileKeyName))
	return nil
}

// Init implements Backend: writes a fresh random key, 0600, failing if one
// exists (O_EXCL).
func (f *FileBackend) Init(ctx context.Context) error {
	if err := f.check(); err != nil {
		return err
	}
	r := f.Rand
	if r == nil {
		r = rand.Reader
	}
	key := make([]byte, KeySize)
	defer clear(key)
	if _, err := io.ReadFull(r, key); err != nil {
		return fmt.Errorf("file backend: random key: %w", err)
	}
	return f.writeNew(FileKeyName, key)
}

// Import implements Joiner: writes key, received from another replica, as
// Init writes a fresh one.
func (f *FileBackend) Import(ctx context.Context, key []byte) error {
	if err := f.check(); err != nil {
		return err
	}
	if len(key) != KeySize {
		return fmt.Errorf("file backend: master key is %d bytes, want %d: %w", len(key), KeySize, ErrInvalid)
	}
	return f.writeNew(FileKeyName, key)
}

// FileTransportKeyName is the file a joining replica's transport private
// key is kept in (in clear, like the file backend's master key), removed
// once the join completes.
const FileTransportKeyName = "vault-join-transport.key"

// SealTransportKey implements Joiner: a 0600 file, in clear.
func (f *FileBackend) SealTransportKey(ctx context.Context, priv []byte) error {
	if err := f.check(); err != nil {
		return err
	}
	return f.writeNew(FileTransportKeyName, priv)
}

// OpenTransportKey implements Joiner.
func (f *FileBackend) OpenTransportKey(ctx context.Context) ([]byte, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	k, err := fsutil.ReadFileLimit(filepath.Join(f.Dir, FileTransportKeyName), maxSealedBlob)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoJoin
	}
	if err != nil {
		return nil, fmt.Errorf("file backend: %w", err)
	}
	return k, nil
}

// RemoveTransportKey implements Joiner.
func (f *FileBackend) RemoveTransportKey() error {
	return removeIfExists(filepath.Join(f.Dir, FileTransportKeyName))
}

func (f *FileBackend) writeNew(name string, b []byte) error {
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return fmt.Errorf("file backend: %w", err)
	}
	return writeNewFile(filepath.Join(f.Dir, name), b)
}

// Open implements Backend.
func (f *FileBackend) Open(ctx context.Context) ([]byte, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	p := filepath.Join(f.Dir, FileKeyName)
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoMasterKey
	}
	if err != nil {
		return nil, fmt.Errorf("file backend: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("file backend: %s has mode %v: readable by others; chmod 600 it", p, st.Mode().Perm())
	}
	if st.Size() != KeySize {
		return nil, fmt.Errorf("file backend: %s is %d bytes, want %d", p, st.Size(), KeySize)
	}
	key, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("file backend: %w", err)
	}
	if len(key) != KeySize {
		clear(key)
		return nil, fmt.Errorf("file backend: %s is %d bytes, want %d", p, len(key), KeySize)
	}
	return key, nil
}

// writeNewFile creates path (0600, must not exist) with b, atomically: a
// crash never leaves a half-written key file behind.
func writeNewFile(path string, b []byte) error {
	err := fsutil.WriteFileNew(path, b, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s: %w", path, ErrMasterKeyExists)
	}
	return err
}
