// Package launchercmd holds the launcher's subcommands (one file each); the
// launcher binary in cmd/launcher only calls Program.Main.
package launchercmd

import "github.com/bulwark-project/bulwark/internal/cli"

// Program is the launcher CLI. Subcommand files register into it from init.
var Program = &cli.Program{
	Name:    "launcher",
	Summary: "verify, measure and boot signed workloads in attested micro-VM sandboxes",
}
