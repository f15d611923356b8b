package launch

import (
	"slices"
	"testing"

	"github.com/bulwark-project/bulwark/policy"
)

// TestHostPCRsMatchPolicy: the launcher quotes exactly the host PCRs a
// policy may require (policy check refuses the others): 0 to
// policy.MaxAlwaysQuotedHostPCR always, the rest up to policy.MaxHostPCR
// beside a firmware event log.
func TestHostPCRsMatchPolicy(t *testing.T) {
	seq := func(lo, hi int) []int {
		var s []int
		for i := lo; i <= hi; i++ {
			s = append(s, i)
		}
		return s
	}
	if want := seq(0, policy.MaxAlwaysQuotedHostPCR); !slices.Equal(hostPCRs, want) {
		t.Fatalf("hostPCRs %v, policies may require %v always", hostPCRs, want)
	}
	if want := seq(policy.MaxAlwaysQuotedHostPCR+1, policy.MaxHostPCR); !slices.Equal(bootLoaderPCRs, want) {
		t.Fatalf("bootLoaderPCRs %v, policies may require %v with a firmware log", bootLoaderPCRs, want)
	}
}

// TestQuotedPCRs: PCRs 8 and 9 are quoted only when a firmware event log
// goes with the quote (attestd then replays the log's events for them);
// the launch PCR is quoted once, wherever it is.
func TestQuotedPCRs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		launch int
		log    []byte
		want   []int
	}{
		{"no firmware log", 13, nil, []int{0, 1, 2, 3, 4, 5, 6, 7, 13}},
		{"empty firmware log", 13, []byte{}, []int{0, 1, 2, 3, 4, 5, 6, 7, 13}},
		{"firmware log", 13, []byte("log"), []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13}},
		{"launch PCR among the host PCRs", 7, []byte("log"), []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"launch PCR 8 without a log", 8, nil, []int{0, 1, 2, 3, 4, 5, 6, 7, 8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := quotedPCRs(tc.launch, tc.log); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}
