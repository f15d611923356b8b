package attestd

import (
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-attestation/attest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestFirmwareLogReplay replays real firmware event logs (the test data
// that ships with go-attestation, read from the module cache) against
// SHA-256 PCR values computed here by extending each event's digest, and
// refuses them when one PCR differs.
func TestFirmwareLogReplay(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/google/go-attestation").Output()
	if err != nil {
		t.Skipf("go-attestation module source not available: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "attest", "testdata")
	for _, name := range []string{"ubuntu_2104_shielded_vm_no_secure_boot_eventlog", "coreos_36_shielded_vm_no_secure_boot_eventlog"} {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Skipf("test data missing: %v", err)
			}
			el, err := attest.ParseEventLog(raw)
			if err != nil {
				t.Fatal(err)
			}
			pcrs := map[int][]byte{}
			for _, ev := range el.Events(attest.HashSHA256) {
				if ev.Type.String() == "EV_NO_ACTION" {
					continue
				}
				cur, ok := pcrs[ev.Index]
				if !ok {
					cur = make([]byte, 32)
				}
				h := sha256.New()
				h.Write(cur)
				h.Write(ev.Digest)
				pcrs[ev.Index] = h.Sum(nil)
			}
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
