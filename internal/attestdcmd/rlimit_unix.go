//go:build unix

package attestdcmd

import "syscall"

// processFileLimit is this process's RLIMIT_NOFILE.
var processFileLimit = fileLimit{
	get: func() (uint64, uint64, error) {
		var r syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			return 0, 0, err
		}
		return uint64(r.Cur), uint64(r.Max), nil
	},
	set: func(soft uint64) error {
		var r syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			return err
		}
		r.Cur = soft
		return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	},
}
