package limits

import (
	"errors"
	"testing"
)

func TestCheckLaunchPCR(t *testing.T) {
	for _, tc := range []struct {
		pcr int
		ok  bool
	}{
		{-1, false},
		{0, false}, // the firmware's PCR
		{1, true},
		{DefaultLaunchPCR, true},
		{MaxPCR, true},
		{MaxPCR + 1, false},
		{1 << 40, false},
	} {
		err := CheckLaunchPCR(tc.pcr)
		if (err == nil) != tc.ok {
			t.Errorf("CheckLaunchPCR(%d) = %v, want ok %v", tc.pcr, err, tc.ok)
		}
		var le *LaunchPCRError
		if err != nil && (!errors.As(err, &le) || le.PCR != tc.pcr) {
			t.Errorf("CheckLaunchPCR(%d) = %v, not a *LaunchPCRError for it", tc.pcr, err)
		}
	}
}

func TestCheckNonceSize(t *testing.T) {
	for _, tc := range []struct {
		n  int
		ok bool
	}{
		{0, false},
		{8, false}, // tpm/verify once accepted 8..15 bytes; the store did not
		{MinNonceSize - 1, false},
		{MinNonceSize, true},
		{32, true}, // what attestd issues
		{MaxNonceSize, true},
		{MaxNonceSize + 1, false},
	} {
		if err := CheckNonceSize(tc.n); (err == nil) != tc.ok {
			t.Errorf("CheckNonceSize(%d) = %v, want ok %v", tc.n, err, tc.ok)
		}
	}
}

func TestConstantsAgree(t *testing.T) {
	if NumPCRs != 24 || !(MinLaunchPCR <= DefaultLaunchPCR && DefaultLaunchPCR <= MaxPCR) || MinNonceSize > MaxNonceSize {
		t.Fatalf("inconsistent: NumPCRs %d, launch PCR %d in %d..%d, nonce %d..%d",
			NumPCRs, DefaultLaunchPCR, MinLaunchPCR, MaxPCR, MinNonceSize, MaxNonceSize)
	}
}
