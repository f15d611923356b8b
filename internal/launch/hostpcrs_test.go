package launch

import (
	"testing"

	"github.com/bulwark-project/bulwark/policy"
)

// TestHostPCRsMatchPolicy: the launcher quotes exactly the host PCRs a
// policy may require (policy check refuses the others).
func TestHostPCRsMatchPolicy(t *testing.T) {
	if len(HostPCRs) != policy.MaxHostPCR+1 {
		t.Fatalf("HostPCRs %v, policies may require 0..%d", HostPCRs, policy.MaxHostPCR)
	}
	for i, p := range HostPCRs {
		if p != i {
			t.Fatalf("HostPCRs %v, policies may require 0..%d", HostPCRs, policy.MaxHostPCR)
		}
	}
}
