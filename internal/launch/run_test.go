package launch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunRejectsBadOptionsFirst: options that could only fail late (the
// launch PCR when the event is recorded after boot) fail before any work;
// StateDir pointing nowhere would fail if Run got that far.
func TestRunRejectsBadOptionsFirst(t *testing.T) {
	base := Options{Policy: "p", Image: "/nonexistent/image", StateDir: "/nonexistent/state", Accel: "tcg"}
	for _, tc := range []struct {
		name string
		set  func(*Options)
		want string
	}{
		{"PCR 24", func(o *Options) { o.PCR = 24 }, "launch PCR 24: want 1..23"},
		{"PCR 99", func(o *Options) { o.PCR = 99 }, "launch PCR 99: want 1..23"},
		{"negative PCR", func(o *Options) { o.PCR = -1 }, "launch PCR -1"},
		{"negative boot timeout", func(o *Options) { o.BootTimeout = -time.Second }, "boot timeout -1s is negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.set(&o)
			res, err := Run(context.Background(), o)
			if res != nil || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v, %v; want an error containing %q", res, err, tc.want)
			}
		})
	}
}

// TestPinInitrdEmptyAgent: an empty --agent file says it is empty, naming
// the file, instead of the builder's generic refusal.
func TestPinInitrdEmptyAgent(t *testing.T) {
	agent := filepath.Join(t.TempDir(), "bulwark-agent")
	if err := os.WriteFile(agent, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := pinInitrd(context.Background(), &Options{Agent: agent})
	if err == nil || !strings.Contains(err.Error(), "guest agent: "+agent+" is empty (0 bytes)") {
		t.Fatalf("pinInitrd: %v", err)
	}
}
