package launch

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bulwark-project/bulwark/tpm"
)

func TestFirmwareLog(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "binary_bios_measurements")
	if err := os.WriteFile(logPath, []byte("log bytes"), 0o400); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o400)
	device := tpm.Spec{Kind: tpm.KindDevice, Path: "/dev/tpmrm0"}
	for _, tc := range []struct {
		name    string
		spec    tpm.Spec
		path    string
		want    string
		wantErr bool
	}{
		{"hardware TPM with a log", device, logPath, "log bytes", false},
		{"hardware TPM, no securityfs log", device, filepath.Join(dir, "missing"), "", false},
		{"hardware TPM, empty log", device, empty, "", false},
		{"hardware TPM, log unreadable", device, dir, "", true},
		{"managed swtpm: it measured no firmware", tpm.Spec{Kind: tpm.KindManaged, Path: dir}, logPath, "", false},
		{"simulator", tpm.Spec{Kind: tpm.KindSimulator}, logPath, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := firmwareLog(tc.spec, tc.path)
			if (err != nil) != tc.wantErr || string(b) != tc.want {
				t.Fatalf("got %q, %v; want %q, error %v", b, err, tc.want, tc.wantErr)
			}
		})
	}
}
