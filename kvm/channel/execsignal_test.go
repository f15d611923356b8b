package channel

import (
	"bytes"
	"testing"
)

// TestExecSignalFrame: EXEC_SIGNAL is frame 27, known from protocol
// version 7 on (28 is not), and its body decodes strictly: an exec id
// other than 0, a signal of 1..64, no other field, nothing after it.
func TestExecSignalFrame(t *testing.T) {
	if TypeExecSignal != 27 || TypeExecSignal.String() != "EXEC_SIGNAL" || !TypeExecSignal.Known() || Type(28).Known() || Version != 7 {
		t.Fatalf("EXEC_SIGNAL %d %q known=%v; 28 known=%v; version %d", TypeExecSignal, TypeExecSignal, TypeExecSignal.Known(), Type(28).Known(), Version)
	}
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{"id":3,"signal":15}`, true},
		{`{"id":3,"signal":1}`, true},
		{`{"id":4294967295,"signal":64}`, true},
		{`{"id":0,"signal":15}`, false},           // exec 0 is never an exec
		{`{"id":3,"signal":0}`, false},            // 0 only probes; nothing to send
		{`{"id":3,"signal":65}`, false},           // past SIGRTMAX
		{`{"id":3,"signal":-9}`, false},           // negative
		{`{"id":3}`, false},                       // no signal: 0
		{`{"signal":9}`, false},                   // no id: 0
		{`{"id":3,"signal":9,"all":true}`, false}, // unknown field
		{`{"id":3,"signal":9}{}`, false},          // trailing data
		{`{"id":-1,"signal":9}`, false},           // id out of uint32
		{`{"id":3,"signal":"TERM"}`, false},       // names are the host's business
		{`{"id":3,"signal":9.5}`, false},
		{``, false},
	} {
		var s ExecSignal
		err := Decode(TypeExecSignal, []byte(tc.body), &s)
		if err == nil {
			err = s.Validate()
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.body, err, tc.ok)
		}
	}
	// What the host writes is what the agent reads.
	var b bytes.Buffer
	if err := WriteJSON(&b, TypeExecSignal, ExecSignal{ID: 9, Signal: 15}); err != nil {
		t.Fatal(err)
	}
	typ, body, err := ReadFrame(&b)
	if err != nil || typ != TypeExecSignal || string(body) != `{"id":9,"signal":15}` {
		t.Fatalf("frame %s %q: %v", typ, body, err)
	}
}

func FuzzDecodeExecSignal(f *testing.F) {
	f.Add([]byte(`{"id":3,"signal":15}`))
	f.Add([]byte(`{"id":0,"signal":15}`))
	f.Add([]byte(`{"id":3,"signal":65}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s ExecSignal
		if Decode(TypeExecSignal, b, &s) != nil || s.Validate() != nil {
			return
		}
		if s.ID == 0 || s.Signal < 1 || s.Signal > MaxSignal {
			t.Fatalf("accepted %+v", s)
		}
	})
}
