package kvm

import (
	"os"
	"path/filepath"
)

// StateDir is where the launcher keeps state and caches: $BULWARK_STATE,
// else /var/lib/bulwark as root, else $XDG_STATE_HOME/bulwark
// (~/.local/state/bulwark). (A private helper until a shared
// internal/statedir exists.)
func StateDir() string {
	if d := os.Getenv("BULWARK_STATE"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/bulwark"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "bulwark")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "bulwark")
	}
	return filepath.Join(os.TempDir(), "bulwark-state")
}
