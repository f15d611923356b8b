package measure

import (
	"github.com/bulwark-project/bulwark/tpm/limits"
	"os"
	"path/filepath"
	"testing"
)

func TestLogFileRoundTripAndCorruption(t *testing.T) {
	path := filepath.Join(t.TempDir(), "launch.cel")
	l, err := ReadLogFile(path)
	if err != nil || l.Len() != 0 {
		t.Fatalf("missing file: %v, %d records", err, l.Len())
	}
	for _, id := range []string{"sb-1", "sb-2"} {
		if _, err := l.Append(testEvent(id), limits.DefaultLaunchPCR, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, l.Encode(), 0o644); err != nil {
		t.Fatal(err)
	}
	back, err := ReadLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Len() != 2 || back.Records()[1].Event.SandboxID != "sb-2" {
		t.Fatalf("read back %d records", back.Len())
	}
	// A corrupt file is refused, never taken for an empty log.
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(path, append(b, 1, 2, 3), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadLogFile(path); err == nil {
		t.Fatal("read a corrupt log without error")
	}
}
