package measure

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// ReadLogFile reads and strictly parses the launch event log at path. A
// missing file is an empty log (a host that has launched nothing yet).
func ReadLogFile(path string) (*Log, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Log{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading launch event log: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxLogSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading launch event log %s: %w", path, err)
	}
	l, err := ParseLog(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}

// WriteFile writes the encoded log to path atomically (a temporary file in
// the same directory, fsynced, then renamed over path).
func (l *Log) WriteFile(path string) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".launchlog-*")
	if err != nil {
		return fmt.Errorf("writing launch event log: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(l.Encode()); err != nil {
		tmp.Close()
		return fmt.Errorf("writing launch event log: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing launch event log: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing launch event log: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("writing launch event log: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing launch event log: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
