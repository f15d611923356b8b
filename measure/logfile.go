package measure

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ReadLogFile reads and strictly parses the launch event log at path. A
// missing file is an empty log (a host that has launched nothing yet). The
// file has no size limit (unlike ParseLog's input): it is the host's own,
// and grows with every launch until the TPM resets.
func ReadLogFile(path string) (*Log, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Log{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading launch event log: %w", err)
	}
	l, err := parseLog(b, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}
