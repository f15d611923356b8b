// Package statedir says where Bulwark keeps its per-host state (the managed
// swtpm, the AK handle, the launch event log, caches): $BULWARK_STATE, else
// /var/lib/bulwark as root, else $XDG_STATE_HOME/bulwark or
// ~/.local/state/bulwark.
package statedir

import (
	"errors"
	"os"
	"path/filepath"
)

// EnvVar names the environment variable that overrides the state directory.
const EnvVar = "BULWARK_STATE"

// Dir returns the state directory (absolute, not created). getenv is
// os.Getenv in production; nil means os.Getenv.
func Dir(getenv func(string) string) (string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if d := getenv(EnvVar); d != "" {
		return filepath.Abs(d)
	}
	if os.Geteuid() == 0 {
		return "/var/lib/bulwark", nil
	}
	if d := getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "bulwark"), nil
	}
	home := getenv("HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", errors.New("state directory: set $BULWARK_STATE (no $HOME to default to)")
		}
		home = h
	}
	return filepath.Join(home, ".local", "state", "bulwark"), nil
}

// Ensure returns Dir, created with mode 0700 if missing.
func Ensure(getenv func(string) string) (string, error) {
	d, err := Dir(getenv)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", err
	}
	return d, nil
}
