package launch

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/measure"
)

// TestOptionsRandAndClock: a launch's randomness and wall clock are
// injected as attestd's are: sandbox ids come from Options.Rand, and both
// reach the sandbox's kvm.Config (the guest's entropy and time).
func TestOptionsRandAndClock(t *testing.T) {
	at := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	r := bytes.NewReader(bytes.Repeat([]byte{0xab}, 64))
	o := Options{Rand: r, Now: func() time.Time { return at }}
	id, err := newSandboxID(o.random())
	if err != nil || id != strings.Repeat("ab", 16) || !ValidSandboxID(id) {
		t.Fatalf("sandbox id %q (%v): want it from Options.Rand", id, err)
	}
	if !o.now().Equal(at) {
		t.Fatalf("now %v, want the injected %v", o.now(), at)
	}
	cfg := o.sandboxConfig(&measure.Pinned{}, &measure.Pinned{}, "tcg", "console=ttyS0")
	if cfg.Rand != o.Rand || cfg.Now == nil || !cfg.Now().Equal(at) {
		t.Fatalf("kvm.Config: Rand %v, Now set %v: want the launch's", cfg.Rand, cfg.Now != nil)
	}
	if _, err := newSandboxID(bytes.NewReader(nil)); err == nil {
		t.Fatal("an empty randomness source gave a sandbox id")
	}
	var zero Options
	if zero.random() == nil || time.Since(zero.now()) > time.Minute {
		t.Fatal("the defaults are crypto/rand and the real clock")
	}
}
