package attestdcmd

import "fmt"

// fdMargin is the file descriptors attestd needs beyond its gRPC
// connections: the store (a bbolt file, or up to 32 PostgreSQL
// connections), the metrics listener and its clients, the policy
// watcher, the TPM, logs.
const fdMargin = 512

// fileLimit reads and sets the soft open-file limit (RLIMIT_NOFILE).
type fileLimit struct {
	get func() (soft, hard uint64, err error)
	set func(soft uint64) error
}

// ensureFileLimit makes sure attestd may open maxConns connections plus
// fdMargin other files: when the soft limit is lower it is raised to the
// hard limit; when the hard limit is lower too, attestd refuses to start
// (past the limit it could accept no one, nor serve /metrics, nor read
// policies). It returns the soft limit before and after.
func ensureFileLimit(maxConns int, fl fileLimit) (before, after uint64, err error) {
	need := uint64(maxConns) + fdMargin
	soft, hard, err := fl.get()
	if err != nil {
		return 0, 0, fmt.Errorf("reading the open-file limit (RLIMIT_NOFILE): %w", err)
	}
	if soft >= need {
		return soft, soft, nil
	}
	if hard < need {
		return soft, soft, fmt.Errorf("the open-file limit (RLIMIT_NOFILE) is %d, at most %d (hard limit): --max-conns %d needs %d "+
			"(the connections and %d for the store, metrics and policies); raise the hard limit (systemd: LimitNOFILE=%d; "+
			"shell, as root: ulimit -Hn %d) or lower --max-conns to %d or less", soft, hard, maxConns, need, fdMargin, need, need, saturatingSub(hard, fdMargin))
	}
	if err := fl.set(hard); err != nil {
		return soft, soft, fmt.Errorf("raising the open-file limit (RLIMIT_NOFILE) from %d to %d for --max-conns %d: %w", soft, hard, maxConns, err)
	}
	return soft, hard, nil
}

// fitFileLimit is ensureFileLimit for serve: a --max-conns given explicitly
// must fit the hard limit, but the default is lowered to what fits (a
// container with a hard limit of 4096, say), down to minDefaultConns, so
// that attestd serves fewer connections rather than none. It returns the
// --max-conns to use.
func fitFileLimit(maxConns int, explicit bool, fl fileLimit) (conns int, before, after uint64, err error) {
	before, after, err = ensureFileLimit(maxConns, fl)
	if err == nil || explicit {
		return maxConns, before, after, err
	}
	_, hard, herr := fl.get()
	fit := int(saturatingSub(hard, fdMargin))
	if herr != nil || fit < minDefaultConns {
		return maxConns, before, after, err
	}
	before, after, err = ensureFileLimit(fit, fl)
	return fit, before, after, err
}

// minDefaultConns is the fewest connections attestd lowers its default
// --max-conns to when the host's hard open-file limit cannot fit the default.
const minDefaultConns = 256

func saturatingSub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}
