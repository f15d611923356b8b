// Package attestdcmd holds attestd's subcommands (one file each); the attestd
// binary in cmd/attestd only calls Program.Main.
package attestdcmd

import "github.com/bulwark-project/bulwark/internal/cli"

// Program is the attestd CLI. Subcommand files register into it from init.
var Program = &cli.Program{
	Name:    "attestd",
	Summary: "the Bulwark attestation and key-release service",
}
