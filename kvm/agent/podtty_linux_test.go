package agent

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/kvm/channel"
)

// TestReadHostMessageContainerInput: CONTAINER_STDIN and CONTAINER_RESIZE
// are accepted only when valid.
func TestReadHostMessageContainerInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  channel.Type
		body string
		ok   bool
	}{
		{"input", channel.TypeContainerStdin, "\x02abc", true},
		{"end of input", channel.TypeContainerStdin, "\x02", true},
		{"no index", channel.TypeContainerStdin, "", false},
		{"index out of range", channel.TypeContainerStdin, "\x10abc", false},
		{"chunk too big", channel.TypeContainerStdin, "\x02" + strings.Repeat("a", channel.MaxStdinChunk+1), false},
		{"resize", channel.TypeContainerResize, `{"index":2,"rows":24,"cols":80}`, true},
		{"resize of container 16", channel.TypeContainerResize, `{"index":16,"rows":24,"cols":80}`, false},
		{"resize to 0 columns", channel.TypeContainerResize, `{"index":2,"rows":24,"cols":0}`, false},
		{"resize with an unknown field", channel.TypeContainerResize, `{"index":2,"rows":24,"cols":80,"x":1}`, false},
		{"resize that is not JSON", channel.TypeContainerResize, "\x02", false},
	} {
		var b bytes.Buffer
		if err := channel.WriteFrame(&b, tc.typ, []byte(tc.body)); err != nil {
			t.Fatal(err)
		}
		m, err := ReadHostMessage(&b)
		if got := err == nil && (m.ContainerStdin != nil || m.ContainerResize != nil); got != tc.ok {
			t.Errorf("%s: %+v %v, want accepted %v", tc.name, m, err, tc.ok)
		}
	}
}

// addContainerInputSeeds adds CONTAINER_STDIN and CONTAINER_RESIZE
// frames to FuzzReadFrame's corpus.
func addContainerInputSeeds(f *testing.F) {
	var b bytes.Buffer
	channel.WriteFrame(&b, channel.TypeContainerStdin, channel.ContainerInput{Index: 2, Data: []byte("ls\n")}.Encode())
	f.Add(bytes.Clone(b.Bytes()))
	b.Reset()
	channel.WriteJSON(&b, channel.TypeContainerResize, channel.ContainerResize{Index: 2, Rows: 50, Cols: 132})
	f.Add(bytes.Clone(b.Bytes()))
}

// checkContainerInput fails a fuzzed frame that was accepted as
// CONTAINER_STDIN or CONTAINER_RESIZE out of bounds.
func checkContainerInput(t *testing.T, m HostMessage) {
	if in := m.ContainerStdin; in != nil && (in.Index < 0 || in.Index >= channel.MaxContainers || len(in.Data) > channel.MaxStdinChunk) {
		t.Fatalf("accepted an invalid CONTAINER_STDIN: index %d, %d bytes", in.Index, len(in.Data))
	}
	if r := m.ContainerResize; r != nil {
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted an invalid CONTAINER_RESIZE: %v", err)
		}
	}
}

// TestContainerInputRouting: CONTAINER_STDIN reaches the stdin of the
// container it names, in order, and its end closes that stdin; input for
// a container without stdin, or that the pod does not have, is dropped.
func TestContainerInputRouting(t *testing.T) {
	s := &session{pod: &pod{containers: map[int]*podContainer{}}}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	withStdin := &podContainer{in: newInput(true, nil)}
	withStdin.in.feed.attach(w)
	s.pod.containers[1] = withStdin
	s.pod.containers[2] = &podContainer{in: newInput(false, nil)} // nil: neither stdin nor terminal
	if s.pod.containers[2].in != nil {
		t.Fatal("newInput(false, nil) is not nil")
	}
	for _, in := range []channel.ContainerInput{
		{Index: 2, Data: []byte("not for 1")},
		{Index: 7, Data: []byte("no such container")},
		{Index: 1, Data: []byte("hello ")},
		{Index: 1, Data: []byte("world")},
		{Index: 1}, // its end
		{Index: 1, Data: []byte("after the end")},
	} {
		s.containerStdin(&in)
	}
	got, err := io.ReadAll(r) // ends once the feed closed its pipe
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello world" {
		t.Errorf("container 1 read %q, want %q", got, "hello world")
	}
	// A resize of a container without a terminal, or of none, changes
	// nothing and does not fail.
	s.containerResize(&channel.ContainerResize{Index: 2, Rows: 5, Cols: 5})
	s.containerResize(&channel.ContainerResize{Index: 9, Rows: 5, Cols: 5})
}
