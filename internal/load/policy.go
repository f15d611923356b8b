package load

import (
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strconv"

	"github.com/bulwark-project/bulwark/internal/softtpm"
)

// WritePolicy writes the attestd policy file (docs/policy.md format) that
// admits exactly the simulated workload: the digests of
// softtpm.SimulatedArtifacts, its exact command line, no argument override,
// the host PCR values every simulated host has (softtpm.HostPCRValues), and
// the release of secret.
func WritePolicy(w io.Writer, name, secret string, hostPCRs []int) error {
	if name == "" {
		name = DefaultPolicy
	}
	if secret == "" {
		secret = DefaultSecret
	}
	if hostPCRs == nil {
		hostPCRs = defaultHostPCRs
	}
	a := softtpm.SimulatedArtifacts()
	vals := softtpm.HostPCRValues(nil)
	pcrs := append([]int(nil), hostPCRs...)
	sort.Ints(pcrs)
	q := strconv.Quote
	ew := &errWriter{w: w}
	w = ew
	fmt.Fprintf(w, `# Policy for bulwark-load's simulated hosts (written by bulwark-load --write-policy).
# It admits only the load generator's simulated workload; never install it
# beside production policies on an attestd that serves real hosts.
apiVersion: bulwark.dev/v1
name: %s
description: "bulwark-load simulated fleet"
kernel:
  digests: [%s]
initrd:
  digests: [%s]
cmdline:
  exact: [%s]
image:
  digests: [%s]
args:
  allow: none
`, q(name), q(a.Kernel), q(a.Initrd), q(a.Cmdline), q(a.Image))
	if len(pcrs) > 0 {
		fmt.Fprintf(w, "host:\n  pcrs:\n")
		for _, p := range pcrs {
			v, ok := vals[p]
			if !ok {
				return fmt.Errorf("host PCR %d is not measured by the simulated hosts (they measure %v)", p, defaultHostPCRs)
			}
			fmt.Fprintf(w, "    %d: [%s]\n", p, q(hex.EncodeToString(v)))
		}
	}
	fmt.Fprintf(w, "secrets: [%s]\n", q(secret))
	return ew.err
}
