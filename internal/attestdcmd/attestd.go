// Package attestdcmd holds attestd's subcommands (one file each); the attestd
// binary in cmd/attestd only calls Program.Main.
package attestdcmd

import (
	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/policycheck"
)

// Program is the attestd CLI: its whole command table, in one place.
var Program = cli.NewProgram("attestd",
	"the Bulwark attestation and key-release service",
	serveCommand,
	ctlRootCommand,
	adminCertCommand,
	clientCertCommand,
	policycheck.Command,
	auditVerifyCommand,
	storeCompactCommand,
	replicaJoinCommand,
	replicaApproveCommand,
)
