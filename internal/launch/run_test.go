package launch

import (
	"context"
	"errors"
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
		// The kernel splits on 0xa0, tab and newline and stops at NUL; the policy would not.
		{"cmdline with no-break space", func(o *Options) { o.Cmdline = "loglevel=4\xa0kprobe_event=p:vfs_write" }, `launch refused before boot: kernel command line byte 10 is "\xa0"`},
		{"cmdline with UTF-8 no-break space", func(o *Options) { o.Cmdline = "loglevel=4\u00a0kprobe_event=p:vfs_write" }, `kernel command line byte 10 is "\xc2"`},
		{"cmdline with tab", func(o *Options) { o.Cmdline = "quiet\tinit=/bin/sh" }, `byte 5 is "\t"`},
		{"cmdline with newline", func(o *Options) { o.Cmdline = "quiet\ninit=/bin/sh" }, `byte 5 is "\n"`},
		{"cmdline with NUL", func(o *Options) { o.Cmdline = "quiet\x00init=/bin/sh" }, `byte 5 is "\x00"`},
		{"cmdline with quotes", func(o *Options) { o.Cmdline = `x="a init=/bin/sh"` }, `byte 2 is "\""`},
		{"cmdline too long", func(o *Options) { o.Cmdline = strings.Repeat("q", 2048) }, "kernel command line is 2048 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.set(&o)
			res, err := Run(context.Background(), o)
			if res != nil || err == nil || !strings.Contains(err.Error(), tc.want) || strings.HasPrefix(tc.name, "cmdline") && !errors.Is(err, ErrRefused) {
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
