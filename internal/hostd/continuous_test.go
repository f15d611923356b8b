package hostd

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
)

// TestWatchSeq: the last decision applied survives a restart; a missing
// or damaged file starts from the first decision again.
func TestWatchSeq(t *testing.T) {
	dir := t.TempDir()
	s := &Service{cfg: Config{StateDir: dir, Logger: slog.New(slog.DiscardHandler)}, sandboxes: map[string]*sandbox{}}
	if got := s.watchSeq(); got != 0 {
		t.Fatalf("no file: %d", got)
	}
	if err := s.saveWatchSeq(42); err != nil {
		t.Fatal(err)
	}
	if got := (&Service{cfg: Config{StateDir: dir}}).watchSeq(); got != 42 {
		t.Fatalf("after a restart: %d, want 42", got)
	}
	if err := os.WriteFile(filepath.Join(dir, watchSeqFile), []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := s.watchSeq(); got != 0 {
		t.Fatalf("a damaged file: %d", got)
	}
}

// TestApplyToNoSuchSandbox: a decision for a sandbox that does not run
// here (ended, removed, another host's before a re-enrollment) is
// skipped; one for a sandbox not yet running too.
func TestApplyToNoSuchSandbox(t *testing.T) {
	s := &Service{cfg: Config{StateDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}, sandboxes: map[string]*sandbox{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer s.cancel()
	s.sandboxes["launching"] = &sandbox{info: &bulwarkv1.Sandbox{Id: "launching"}}
	for _, id := range []string{"gone", "launching"} {
		s.apply(&bulwarkv1.NodeDecision{Seq: 1, SandboxId: id, Kind: bulwarkv1.NodeDecision_KIND_REVOKE, Action: "stop"})
	}
	if s.sandboxes["launching"].info.GetRevoked() != "" {
		t.Fatal("a sandbox not running was marked revoked")
	}
}

// TestSandboxEndedNoted: an ended sandbox is named in the next
// re-attestation only when continuous attestation is on.
func TestSandboxEndedNoted(t *testing.T) {
	off := &Service{}
	off.sandboxEnded("a")
	on := &Service{cfg: Config{ReattestInterval: 1}}
	on.sandboxEnded("a")
	if len(off.ended) != 0 || len(on.ended) != 1 {
		t.Fatalf("ended: off %v, on %v", off.ended, on.ended)
	}
}

// TestDecisionForAContainer: a decision on the launch event of a pod's
// added container is its pod's; the pod's running added containers'
// events are re-attested with it, the first container's (the pod's own
// event) and ended ones' not.
func TestDecisionForAContainer(t *testing.T) {
	s := &Service{sandboxes: map[string]*sandbox{}}
	pod := &sandbox{info: &bulwarkv1.Sandbox{Id: "pod", Pod: true, Containers: []*bulwarkv1.Container{
		{Name: "first", Status: containerRunning, EventId: "pod"},
		{Name: "second", Status: containerRunning, EventId: "ev2"},
		{Name: "third", Status: containerExited, EventId: "ev3"},
		{Name: "refused", Status: containerFailed},
	}}}
	other := &sandbox{info: &bulwarkv1.Sandbox{Id: "other"}}
	s.sandboxes["pod"], s.sandboxes["other"] = pod, other
	for _, tc := range []struct {
		id, container string
		want          *sandbox
	}{
		{"pod", "", pod}, {"other", "", other}, {"ev2", "second", pod}, {"ev3", "third", pod}, {"nope", "", nil}, {"", "", nil},
	} {
		sb, c := s.decisionSandbox(tc.id)
		if sb != tc.want || c != tc.container {
			t.Errorf("decision for %q: %v %q, want %v %q", tc.id, sb, c, tc.want, tc.container)
		}
	}
	if got := pod.runningContainerEvents(); len(got) != 1 || got[0] != "ev2" {
		t.Errorf("events re-attested with the pod: %v, want [ev2]", got)
	}
	if got := other.runningContainerEvents(); len(got) != 0 {
		t.Errorf("events re-attested with a plain sandbox: %v", got)
	}
}
