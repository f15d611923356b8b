package kvm

import (
	"os"
	"path/filepath"

	"github.com/bulwark-project/bulwark/internal/statedir"
)

// StateDir is where the launcher keeps state and caches (internal/statedir):
// $BULWARK_STATE, else /var/lib/bulwark as root, else
// $XDG_STATE_HOME/bulwark (~/.local/state/bulwark).
func StateDir() string {
	d, err := statedir.Dir(nil)
	if err != nil {
		return filepath.Join(os.TempDir(), "bulwark-state")
	}
	return d
}
