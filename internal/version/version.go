// Package version says which build of a Bulwark binary is running, for
// every binary's --version: the module version or VCS revision Go recorded
// at build time, and the Go version.
package version

import (
	"runtime"
	"runtime/debug"
)

// String is "PROG VERSION (GOVERSION)", e.g. "launcher v0.3.0 (go1.26.8)"
// or "attestd devel+1a2b3c4d5e6f-dirty (go1.26.8)".
func String(prog string) string {
	bi, ok := debug.ReadBuildInfo()
	return prog + " " + format(bi, ok) + " (" + runtime.Version() + ")"
}

// format picks the module version when there is one, else the VCS
// revision (12 digits, "-dirty" when modified), else "devel".
func format(bi *debug.BuildInfo, ok bool) string {
	if !ok || bi == nil {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	v := "devel+" + rev
	if dirty {
		v += "-dirty"
	}
	return v
}
