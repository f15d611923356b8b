package channel

import (
	"bytes"
	"strings"
	"testing"
)

func TestContainerStartTTY(t *testing.T) {
	for _, tc := range []struct {
		name string
		tty  *WindowSize
		want string // "" = valid
	}{
		{"no terminal", nil, ""},
		{"24x80", &WindowSize{Rows: 24, Cols: 80}, ""},
		{"largest", &WindowSize{Rows: MaxWindowSize, Cols: MaxWindowSize}, ""},
		{"no rows", &WindowSize{Rows: 0, Cols: 80}, "terminal size"},
		{"no columns", &WindowSize{Rows: 24, Cols: 0}, "terminal size"},
		{"too many rows", &WindowSize{Rows: MaxWindowSize + 1, Cols: 80}, "terminal size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ContainerStart{Index: 1, Name: "c1", DiskDigest: "sha256:" + strings.Repeat("ab", 32), DiskSize: 4096, Stdin: true, TTY: tc.tty}
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate: %v, want an error about %q", err, tc.want)
			}
		})
	}
}

func TestContainerTTYFramesKnown(t *testing.T) {
	for _, typ := range []Type{TypeContainerStdin, TypeContainerResize} {
		if !typ.Known() || strings.HasPrefix(typ.String(), "type(") {
			t.Errorf("%d: Known %v, String %s", typ, typ.Known(), typ)
		}
	}
	if TypeContainerResize+1 != 39 || Type(39).Known() {
		t.Errorf("type 39 is Known")
	}
}

func TestDecodeContainerInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		body []byte
		want string // "" = valid
	}{
		{"input", []byte{3, 'h', 'i'}, ""},
		{"end of input", []byte{3}, ""},
		{"container 0", []byte{0, 'x'}, ""},
		{"last container", []byte{MaxContainers - 1, 'x'}, ""},
		{"largest chunk", append([]byte{1}, make([]byte, MaxStdinChunk)...), ""},
		{"empty body", nil, "index"},
		{"index too big", []byte{MaxContainers, 'x'}, "container 16"},
		{"chunk too big", append([]byte{1}, make([]byte, MaxStdinChunk+1)...), "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := DecodeContainerInput(tc.body)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("DecodeContainerInput: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("DecodeContainerInput: %v, want an error about %q", err, tc.want)
			case err == nil && !bytes.Equal(in.Encode(), tc.body):
				t.Fatalf("round trip: %x, want %x", in.Encode(), tc.body)
			}
		})
	}
}

func TestContainerResizeValidate(t *testing.T) {
	for _, tc := range []struct {
		r    ContainerResize
		want string // "" = valid
	}{
		{ContainerResize{Index: 2, Rows: 50, Cols: 132}, ""},
		{ContainerResize{Index: 0, Rows: 1, Cols: 1}, ""},
		{ContainerResize{Index: -1, Rows: 50, Cols: 132}, "container -1"},
		{ContainerResize{Index: MaxContainers, Rows: 50, Cols: 132}, "container 16"},
		{ContainerResize{Index: 2, Rows: 0, Cols: 132}, "terminal size"},
		{ContainerResize{Index: 2, Rows: 50, Cols: MaxWindowSize + 1}, "terminal size"},
	} {
		err := tc.r.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Validate(%+v): %v", tc.r, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Validate(%+v): %v, want an error about %q", tc.r, err, tc.want)
		}
	}
	var r ContainerResize
	if err := Decode(TypeContainerResize, []byte(`{"index":1,"rows":2,"cols":3,"x":1}`), &r); err == nil {
		t.Error("Decode with an unknown field: no error")
	}
}

func FuzzDecodeContainerInput(f *testing.F) {
	f.Add(ContainerInput{Index: 3, Data: []byte("ls\n")}.Encode())
	f.Add([]byte{1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := DecodeContainerInput(b)
		if err != nil {
			return
		}
		if in.Index < 0 || in.Index >= MaxContainers || len(in.Data) > MaxStdinChunk {
			t.Fatalf("decoded out of bounds: index %d, %d bytes", in.Index, len(in.Data))
		}
		if !bytes.Equal(in.Encode(), b) {
			t.Fatalf("round trip of %x gives %x", b, in.Encode())
		}
	})
}

// FuzzDecodeContainerResize decodes arbitrary CONTAINER_RESIZE bodies:
// never a panic, and what validates is within bounds.
func FuzzDecodeContainerResize(f *testing.F) {
	f.Add([]byte(`{"index":1,"rows":24,"cols":80}`))
	f.Add([]byte(`{"index":99,"rows":0,"cols":80}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var r ContainerResize
		if Decode(TypeContainerResize, body, &r) != nil || r.Validate() != nil {
			return
		}
		if r.Index < 0 || r.Index >= MaxContainers || r.Rows < 1 || r.Cols < 1 || r.Rows > MaxWindowSize || r.Cols > MaxWindowSize {
			t.Fatalf("validated out of bounds: %+v", r)
		}
	})
}
