package channel

import (
	"bytes"
	"strings"
	"testing"
)

func TestContainerStartValidate(t *testing.T) {
	good := func() ContainerStart {
		return ContainerStart{Index: 1, Name: "c1", DiskDigest: "sha256:" + strings.Repeat("ab", 32), DiskSize: 4096,
			Args: []string{"sh", "-c", "true"}, Env: []string{"A=1"}, WorkingDir: "/srv", User: "1000:1000"}
	}
	for _, tc := range []struct {
		name string
		mod  func(*ContainerStart)
		want string // "" = valid
	}{
		{"valid", func(*ContainerStart) {}, ""},
		{"slot 0", func(c *ContainerStart) { c.Index = 0 }, ""},
		{"negative index", func(c *ContainerStart) { c.Index = -1 }, "index"},
		{"index too big", func(c *ContainerStart) { c.Index = MaxContainers }, "index"},
		{"empty name", func(c *ContainerStart) { c.Name = "" }, "name"},
		{"name with slash", func(c *ContainerStart) { c.Name = "a/b" }, "name"},
		{"digest not sha256", func(c *ContainerStart) { c.DiskDigest = "sha512:" + strings.Repeat("ab", 32) }, "digest"},
		{"digest uppercase", func(c *ContainerStart) { c.DiskDigest = "sha256:" + strings.Repeat("AB", 32) }, "digest"},
		{"digest short", func(c *ContainerStart) { c.DiskDigest = "sha256:abcd" }, "digest"},
		{"size 0", func(c *ContainerStart) { c.DiskSize = 0 }, "size"},
		{"size not sectors", func(c *ContainerStart) { c.DiskSize = 1000 }, "size"},
		{"size past the slot", func(c *ContainerStart) { c.DiskSize = DiskSlotBytes + 512 }, "size"},
		{"NUL in argument", func(c *ContainerStart) { c.Args = []string{"a\x00"} }, "NUL"},
		{"too many arguments", func(c *ContainerStart) { c.Args = make([]string, MaxContainerArgs+1) }, "arguments"},
		{"arguments too long", func(c *ContainerStart) { c.Args = []string{strings.Repeat("a", MaxContainerArgsBytes+1)} }, "bytes"},
		{"env without =", func(c *ContainerStart) { c.Env = []string{"A"} }, "environment"},
		{"relative cwd", func(c *ContainerStart) { c.WorkingDir = "srv" }, "working directory"},
		{"NUL in user", func(c *ContainerStart) { c.User = "a\x00" }, "user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mod(&c)
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

func TestContainerKillValidate(t *testing.T) {
	for _, tc := range []struct {
		k  ContainerKill
		ok bool
	}{
		{ContainerKill{Index: 2, Signal: 15}, true},
		{ContainerKill{Index: 2, Signal: 0}, false},
		{ContainerKill{Index: 2, Signal: 65}, false},
		{ContainerKill{Index: -1, Signal: 9}, false},
		{ContainerKill{Index: MaxContainers, Signal: 9}, false},
	} {
		if err := tc.k.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v): %v, want ok=%v", tc.k, err, tc.ok)
		}
	}
}

func TestContainerRemoveValidate(t *testing.T) {
	for _, tc := range []struct {
		idx int
		ok  bool
	}{{0, true}, {1, true}, {MaxContainers - 1, true}, {-1, false}, {MaxContainers, false}} {
		r := ContainerRemove{Index: tc.idx}
		if err := r.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v): %v, want ok=%v", r, err, tc.ok)
		}
	}
}

func TestExecContainerIndex(t *testing.T) {
	for _, tc := range []struct {
		idx int
		ok  bool
	}{{0, true}, {MaxContainers - 1, true}, {-1, false}, {MaxContainers, false}} {
		x := Exec{ID: 1, Args: []string{"ls"}, Container: &tc.idx}
		if err := x.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(container %d): %v, want ok=%v", tc.idx, err, tc.ok)
		}
	}
}

func TestContainerFramesKnown(t *testing.T) {
	for _, typ := range []Type{TypeContainerStart, TypeContainerStarted, TypeContainerOut, TypeContainerExit, TypeContainerKill, TypeContainerRemove, TypeContainerRemoved} {
		if !typ.Known() || strings.HasPrefix(typ.String(), "type(") {
			t.Errorf("%d: Known %v, String %s", typ, typ.Known(), typ)
		}
	}
	for _, typ := range []Type{TypeExecSignal + 1, TypeContainerStart - 1, TypeContainerResize + 1} {
		if typ.Known() {
			t.Errorf("%d is Known", typ)
		}
	}
}

func TestDecodeContainerOutput(t *testing.T) {
	for _, tc := range []struct {
		body []byte
		ok   bool
	}{
		{[]byte{1, 1, 'h', 'i'}, true},
		{[]byte{0, 2}, true},
		{[]byte{1}, false},
		{[]byte{1, 3, 'x'}, false},
		{[]byte{MaxContainers, 1, 'x'}, false},
	} {
		if _, err := DecodeContainerOutput(tc.body); (err == nil) != tc.ok {
			t.Errorf("DecodeContainerOutput(%x): %v, want ok=%v", tc.body, err, tc.ok)
		}
	}
}

func FuzzDecodeContainerOutput(f *testing.F) {
	f.Add(ContainerOutput{Index: 3, Stream: 1, Data: []byte("x")}.Encode())
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := DecodeContainerOutput(b)
		if err != nil {
			return
		}
		if !bytes.Equal(o.Encode(), b) {
			t.Fatalf("round trip of %x gives %x", b, o.Encode())
		}
	})
}

// FuzzContainerMessages decodes arbitrary bodies as the container frames'
// JSON messages: decoding and validating never panics, and what validates
// is within its bounds.
func FuzzContainerMessages(f *testing.F) {
	var buf bytes.Buffer
	_ = WriteJSON(&buf, TypeContainerStart, ContainerStart{Index: 1, Name: "c", DiskDigest: "sha256:" + strings.Repeat("0", 64), DiskSize: 512})
	f.Add(buf.Bytes()[5:])
	f.Add([]byte(`{"index":1,"signal":9}`))
	f.Add([]byte(`{"index":2,"pid":7,"error":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var c ContainerStart
		if Decode(TypeContainerStart, body, &c) == nil && c.Validate() == nil {
			if c.Index < 0 || c.Index >= MaxContainers || c.DiskSize <= 0 || len(c.Args) > MaxContainerArgs {
				t.Fatalf("validated out of bounds: %+v", c)
			}
		}
		var k ContainerKill
		if Decode(TypeContainerKill, body, &k) == nil && k.Validate() == nil && (k.Signal < 1 || k.Signal > 64) {
			t.Fatalf("validated signal %d", k.Signal)
		}
		var r ContainerRemove
		if Decode(TypeContainerRemove, body, &r) == nil && r.Validate() == nil && (r.Index < 0 || r.Index >= MaxContainers) {
			t.Fatalf("validated index %d", r.Index)
		}
		var rd ContainerRemoved
		_ = Decode(TypeContainerRemoved, body, &rd)
		var s ContainerStarted
		_ = Decode(TypeContainerStarted, body, &s)
		var e ContainerExit
		_ = Decode(TypeContainerExit, body, &e)
	})
}
