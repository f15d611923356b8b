package agent

import (
	"reflect"
	"testing"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// STATUS reports exactly what was written before it: the containers whose
// CONTAINER_STARTED went out without an error, the exit code of those
// whose CONTAINER_EXIT did (until a CONTAINER_REMOVED without an error),
// the workload's EXIT, and the agent's protocol version.
func TestHostLinkStatus(t *testing.T) {
	var l hostLink
	if got := l.status(true); !reflect.DeepEqual(got, channel.Status{State: "running", Pod: true, Version: channel.Version}) {
		t.Fatalf("an empty pod: %+v", got)
	}
	l.written(channel.TypeContainerStarted, channel.ContainerStarted{Index: 3, PID: 10})
	l.written(channel.TypeContainerStarted, channel.ContainerStarted{Index: 0, PID: 9})
	l.written(channel.TypeContainerStarted, channel.ContainerStarted{Index: 1, Error: "not found"})
	l.written(channel.TypeContainerExit, channel.ContainerExit{Index: 3, Code: 7})
	l.written(channel.TypeContainerExit, channel.ContainerExit{Index: 1, Code: 127}) // never started: not listed
	l.written(channel.TypeStdout, nil)
	want := channel.Status{State: "running", Pod: true, Version: channel.Version, Containers: []channel.ContainerStatus{
		{Index: 0, State: "running"}, {Index: 3, State: "exited", Code: 7}}}
	if got := l.status(true); !reflect.DeepEqual(got, want) {
		t.Fatalf("status %+v, want %+v", got, want)
	}
	if err := want.Validate(); err != nil {
		t.Fatal(err)
	}
	l.written(channel.TypeContainerRemoved, channel.ContainerRemoved{Index: 0, Error: "still runs"})
	l.written(channel.TypeContainerRemoved, channel.ContainerRemoved{Index: 3})
	if got := l.status(true); len(got.Containers) != 1 || got.Containers[0].Index != 0 {
		t.Fatalf("after removing container 3 (and failing to remove 0): %+v", got)
	}
	l.written(channel.TypeExit, channel.Exit{Code: 0})
	if got := l.status(true); got.State != "exited" || got.Code != 0 || len(got.Containers) != 1 {
		t.Fatalf("after EXIT: %+v", got)
	}
	var w hostLink
	w.written(channel.TypeExit, channel.Exit{Code: 4})
	if got := w.status(false); !reflect.DeepEqual(got, channel.Status{State: "exited", Code: 4, Version: channel.Version}) {
		t.Fatalf("a workload's: %+v", got)
	}
}
