package attestd

import (
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestFirmwareLogReplay replays real firmware event logs (the test data
// that ships with go-attestation, read from the module cache) against
// SHA-256 PCR values computed here by extending each event's digest, and
// refuses them when one PCR differs.
func TestFirmwareLogReplay(t *testing.T) {
	dir := firmwareTestdata(t)
	for _, name := range []string{"ubuntu_2104_shielded_vm_no_secure_boot_eventlog", "coreos_36_shielded_vm_no_secure_boot_eventlog"} {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Skipf("test data missing: %v", err)
			}
			pcrs := replayedPCRs(t, raw)
			if len(pcrs) == 0 {
				t.Fatal("no SHA-256 events")
			}
			evs, err := replayFirmwareLog(raw, pcrs)
			if err != nil {
				t.Fatalf("genuine log refused: %v", err)
			}
			if len(evs) == 0 {
				t.Fatal("no events verified")
			}
			for idx := range pcrs {
				bad := map[int][]byte{}
				for k, v := range pcrs {
					bad[k] = v
				}
				bad[idx] = make([]byte, 32)
				bad[idx][0] = 1
				_, err := replayFirmwareLog(raw, bad)
				if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "firmware_event_log") {
					t.Fatalf("PCR %d altered: %v", idx, err)
				}
				break
			}
			_, subErr := replayFirmwareLog(raw, map[int][]byte{0: pcrs[0], 7: pcrs[7]})
			t.Logf("only PCRs 0 and 7 quoted: %v", subErr)
			_, err = replayFirmwareLog(raw[:len(raw)/2], pcrs)
			if c := status.Code(err); c != codes.InvalidArgument && c != codes.PermissionDenied {
				t.Fatalf("truncated log: %v", err)
			}
		})
	}
}

// firmwareTestdata is go-attestation's directory of real firmware event
// logs, in the module cache.
func firmwareTestdata(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/google/go-attestation").Output()
	if err != nil {
		t.Skipf("go-attestation module source not available: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "attest", "testdata")
}

// replayedPCRs computes the SHA-256 PCR values a log's digests extend to
// (what a TPM that measured it would quote).
func replayedPCRs(t *testing.T, raw []byte) map[int][]byte {
	t.Helper()
	pcrs := firmwarePCRs(raw)
	if pcrs == nil {
		t.Fatal("the firmware event log does not parse")
	}
	return pcrs
}

// secureBootName is the name of the SecureBoot variable in its
// UEFI_VARIABLE_DATA, UTF-16LE; one byte of data follows it.
var secureBootName = []byte{'S', 0, 'e', 0, 'c', 0, 'u', 0, 'r', 0, 'e', 0, 'B', 0, 'o', 0, 'o', 0, 't', 0}

func sum256(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}
