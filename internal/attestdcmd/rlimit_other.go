//go:build !unix

package attestdcmd

import "math"

// processFileLimit reports no limit where there is no RLIMIT_NOFILE.
var processFileLimit = fileLimit{
	get: func() (uint64, uint64, error) { return math.MaxUint64, math.MaxUint64, nil },
	set: func(uint64) error { return nil },
}
