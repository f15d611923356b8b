package agent

import (
	"reflect"
	"testing"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// STATUS reports exactly what was written before it: the containers whose
// CONTAINER_STARTED went out without an error, the exit code of those
// whose CONTAINER_EXIT did, and the workload's EXIT.
func TestHostLinkStatus(t *testing.T) {
	var l hostLink
	if got := l.status(true); !reflect.DeepEqual(got, channel.Status{State: "running", Pod: true}) {
		t.Fatalf("an empty pod: %+v", got)
	}
	l.written(channel.TypeContainerStarted, channel.ContainerStarted{Index: 3, PID: 10})
	l.written(channel.TypeContainerStarted, channel.ContainerStarted{Index: 0, PID: 9})
	l.written(channel.TypeContainerStarted, channel.ContainerStarted{Index: 1, Error: "not found"})
	l.written(channel.TypeContainerExit, channel.ContainerExit{Index: 3, Code: 7})
	l.written(channel.TypeContainerExit, channel.ContainerExit{Index: 1, Code: 127}) // never started: not listed
	l.written(channel.TypeStdout, nil)
	want := channel.Status{State: "running", Pod: true, Containers: []channel.ContainerStatus{
		{Index: 0, State: "running"}, {Index: 3, State: "exited", Code: 7}}}
	if got := l.status(true); !reflect.DeepEqual(got, want) {
		t.Fatalf("status %+v, want %+v", got, want)
	}
	if err := want.Validate(); err != nil {
		t.Fatal(err)
	}
	l.written(channel.TypeExit, channel.Exit{Code: 0})
	if got := l.status(true); got.State != "exited" || got.Code != 0 || len(got.Containers) != 2 {
		t.Fatalf("after EXIT: %+v", got)
	}
	var w hostLink
	w.written(channel.TypeExit, channel.Exit{Code: 4})
	if got := w.status(false); !reflect.DeepEqual(got, channel.Status{State: "exited", Code: 4}) {
		t.Fatalf("a workload's: %+v", got)
	}
}
