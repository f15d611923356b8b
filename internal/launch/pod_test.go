package launch

import (
	"errors"
	"strings"
	"testing"
)

// TestPodSlotReservation: a container being added takes the lowest free
// image slot; one that does not get its disk into the slot (refused by
// attestd, failed before the fill) gives it back, so a refusal costs the
// pod no slot, and a removed container gives its slot back; a full pod
// says so and what to do; a pod taken over holds the slots of the
// containers its agent reported.
func TestPodSlotReservation(t *testing.T) {
	var p podLaunch
	const n = 3
	for want := 1; want <= n; want++ {
		if got, err := p.reserve(n); err != nil || got != want {
			t.Fatalf("reserve: %d, %v; want slot %d", got, err, want)
		}
	}
	_, err := p.reserve(n)
	if !errors.Is(err, ErrPodFull) || !strings.Contains(err.Error(), "all 3 are taken") || !strings.Contains(err.Error(), "another pod") {
		t.Fatalf("a full pod: %v", err)
	}
	p.release(2) // a refused container's
	if got, err := p.reserve(n); err != nil || got != 2 {
		t.Fatalf("after a release: %d, %v; want slot 2 again", got, err)
	}
	if _, err := p.reserve(n); !errors.Is(err, ErrPodFull) {
		t.Fatalf("full again: %v", err)
	}
	p.release(0) // out of range: nothing
	p.release(n + 1)
	if _, err := p.reserve(n); !errors.Is(err, ErrPodFull) {
		t.Fatalf("an out-of-range release freed a slot: %v", err)
	}

	var q podLaunch
	q.hold(n, 1)
	q.hold(n, 3)
	if got, err := q.reserve(n); err != nil || got != 2 {
		t.Fatalf("a pod taken over with slots 1 and 3 held: %d, %v; want slot 2", got, err)
	}
	if _, err := q.reserve(n); !errors.Is(err, ErrPodFull) || !strings.Contains(err.Error(), "task is deleted") {
		t.Fatalf("a full pod taken over: %v", err)
	}
}
