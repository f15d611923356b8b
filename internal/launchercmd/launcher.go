// Package launchercmd holds the launcher's subcommands (one file each); the
// launcher binary in cmd/launcher only calls Program.Main.
package launchercmd

import (
	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/policycheck"
)

// Program is the launcher CLI: its whole command table, in one place.
var Program = cli.NewProgram("launcher",
	"verify, measure and boot signed workloads in attested micro-VM sandboxes",
	// The host and its TPM.
	enrollCommand,
	tpmInfoCommand,
	tpmStopCommand,
	// Keys, signatures and measurements.
	keygenCommand,
	signCommand,
	verifyCommand,
	measureCommand,
	// Building what a sandbox boots and runs.
	kernelExtractCommand,
	initrdBuildCommand,
	imageBuildCommand,
	imagePullCommand,
	policyInitCommand,
	policycheck.Command,
	templateCreateCommand,
	templateLsCommand,
	templateInspectCommand,
	templateRmCommand,
	// Running sandboxes: one-shot, or in the host service.
	runCommand,
	daemonCommand,
	psCommand,
	logsCommand,
	execCommand,
	stopCommand,
	inspectCommand,
	rmCommand,
)
