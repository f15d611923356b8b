package hostd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/launch"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RemoveContainer refuses a container that runs or is starting (kill it
// first) and one being removed already, and forgets nothing then.
func TestRemoveContainerRefusesLiveOnes(t *testing.T) {
	s, err := New(Config{StateDir: t.TempDir(), TPM: simTPM(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background(), false) })
	const id = "a123456789abcdef0123456789abcdef"
	sb := &sandbox{dir: t.TempDir(), done: make(chan struct{}), info: &bulwarkv1.Sandbox{Id: id, Status: StatusRunning, Pod: true,
		Containers: []*bulwarkv1.Container{
			{Name: "runs", Status: containerRunning},
			{Name: "starts", Status: containerCreated},
			{Name: "going", Status: containerExited},
		}},
		ctrs: map[string]*podContainer{
			"runs":   {log: endedOutputLog("")},
			"starts": {log: endedOutputLog("")},
			"going":  {log: endedOutputLog(""), removing: true},
		}}
	s.mu.Lock()
	s.sandboxes[id] = sb
	s.mu.Unlock()
	for name, want := range map[string]string{"runs": "kill it first", "starts": "kill it first", "going": "being removed"} {
		_, err := s.RemoveContainer(context.Background(), &bulwarkv1.ContainerRequest{Id: id, Name: name})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), want) {
			t.Errorf("RemoveContainer %s: %v, want FailedPrecondition %q", name, err, want)
		}
		if _, err := s.InspectContainer(context.Background(), &bulwarkv1.ContainerRequest{Id: id, Name: name}); err != nil {
			t.Errorf("container %s is forgotten after a refused removal: %v", name, err)
		}
	}
}

// A pod's saved launch state is taken back only when it is whole and the
// pod's own: a missing or malformed pod.json, a signer that is no key, or
// the state of another pod leave the pod taken over without it.
func TestAdoptPodRefusesBadState(t *testing.T) {
	s, err := New(Config{StateDir: t.TempDir(), TPM: simTPM(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background(), false) })
	const id = "b123456789abcdef0123456789abcdef"
	r := &bulwarkv1.Sandbox{Id: id, Pod: true}
	for _, tc := range []struct {
		name, file, want string
	}{
		{"missing", "", "no such file"},
		{"malformed", "{", podStateFile},
		{"a signer that is no key", `{"launch":{"node_id":"n","event":{"sandbox_id":"` + id + `"}},"signers":["bm90IGEga2V5"]}`, "signer 0"},
		{"another pod's", `{"launch":{"node_id":"n","event":{"sandbox_id":"c123456789abcdef0123456789abcdef"}}}`, "not pod " + id},
		{"no node", `{"launch":{"event":{"sandbox_id":"` + id + `"}}}`, "not pod " + id},
	} {
		dir := t.TempDir()
		if tc.file != "" {
			if err := os.WriteFile(filepath.Join(dir, podStateFile), []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, err := s.adoptPod(dir, nil, launch.Result{SandboxID: id}, r)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
}
