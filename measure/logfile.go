package measure

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/bulwark-project/bulwark/internal/fsutil"
)

// ReadLogFile reads and strictly parses the launch event log at path. A
// missing file is an empty log (a host that has launched nothing yet).
func ReadLogFile(path string) (*Log, error) {
	b, err := fsutil.ReadFileLimit(path, MaxLogSize)
	if errors.Is(err, fs.ErrNotExist) {
		return &Log{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading launch event log: %w", err)
	}
	l, err := ParseLog(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}
