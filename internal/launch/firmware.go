package launch

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/bulwark-project/bulwark/internal/fsutil"
	"github.com/bulwark-project/bulwark/tpm"
)

// FirmwareLogPath is where Linux exposes the firmware's TCG event log of
// the hardware TPM (the measurements behind PCRs 0-7, and the boot
// loader's in 8 and 9).
const FirmwareLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

// maxFirmwareLog matches attestd's limit on the field (3 MiB); real logs are
// tens of KiB.
const maxFirmwareLog = 3 << 20

// firmwareLog returns the host's firmware event log to send with a quote,
// or nil when there is none to send: only a hardware TPM device has one (a
// managed swtpm, a TCP TPM or the simulator measured no firmware), and a
// machine without securityfs or without the log has none. A log that exists
// but cannot be read is an error: a policy on the host's boot state would
// otherwise be judged without it.
func firmwareLog(spec tpm.Spec, path string) ([]byte, error) {
	if spec.Kind != tpm.KindDevice {
		return nil, nil
	}
	b, err := fsutil.ReadFileLimit(path, maxFirmwareLog)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("firmware event log: %w (it is read as root; give the launcher access to securityfs)", err)
	}
	if len(b) == 0 {
		return nil, nil
	}
	return b, nil
}
