package kvm

import "strings"

// templateHubWarning is what QEMU prints on its stderr (as
// "qemu-system-x86_64: warning: hub 0 is not connected to host network")
// for a template's network device: by design a port of a hub with no
// other port (qemuArgs, netTemplate), so that the template's guest
// reaches nothing and each clone gives the device a backend of its own.
// Expected, harmless, and misleading where QEMU's stderr is shown (the
// "QEMU said:" of a failed 'launcher template create --net', the host
// service's log): it reads as the cause of whatever went wrong.
const templateHubWarning = "warning: hub 0 is not connected to host network"

// expectedQEMUStderr returns what drops the lines QEMU prints on stderr
// for the machine of spec that are expected of it and mean nothing to a
// user, or nil when there are none.
func expectedQEMUStderr(spec qemuSpec) func(line string) bool {
	if spec.network != netTemplate {
		return nil
	}
	return func(line string) bool { return strings.HasSuffix(strings.TrimSpace(line), templateHubWarning) }
}
