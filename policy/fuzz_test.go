package policy

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/bulwark-project/bulwark/measure"
)

// FuzzParse feeds arbitrary bytes to the parser: it must never panic, and
// whatever it accepts must evaluate without panicking.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(minimal + "rules:\n  - {name: r, expr: 'node_id.size() > 2'}\nhost:\n  pcrs:\n    7: [" + dA[7:] + "]\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("kernel: {digests: [sha256:]}\ncmdline: {params: {allow: ['a=*'], require: [a=b]}}\n"))
	ents, _ := os.ReadDir(examplesDir)
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(examplesDir, e.Name())); err == nil && !e.IsDir() {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("/nonexistent/fuzz/f.yaml", data, LoadOptions{})
		if err != nil {
			if len(Errors(err)) == 0 {
				t.Fatal("error without problems")
			}
			return
		}
		s, err := NewSet(p)
		if err != nil {
			t.Fatal(err)
		}
		ev := Evidence{Event: measure.LaunchEvent{Policy: p.Name, Kernel: dA, Cmdline: "console=ttyS0"}}
		_ = s.Evaluate(context.Background(), ev)
	})
}

// FuzzEvaluate feeds arbitrary launcher-controlled evidence (command line,
// args, signatures, image payload) to a real policy: no panic, and no allow
// unless the command line and image signature really are the fixture's.
func FuzzEvaluate(f *testing.F) {
	fx := newEvalFixture(f)
	good := fx.evidence(f)
	f.Add(fixtureCmdline, "", good.Signatures[0].Signature, good.Signatures[1].Payload, good.Signatures[1].Signature)
	f.Add(`console=ttyS0 "a b`, "sh", []byte{0x30}, []byte(`{"critical":{}}`), []byte{})
	f.Fuzz(func(t *testing.T, cmdline, arg string, ksig, payload, isig []byte) {
		ev := good
		ev.Event.Cmdline = cmdline
		ev.Event.CmdlineDigest = ""
		if arg != "" {
			ev.Event.Args = []string{arg}
		}
		ev.Signatures = []ArtifactSignature{
			{Artifact: "kernel", Signature: ksig},
			{Artifact: "image", Signature: isig, Payload: payload, PublicKey: payload},
		}
		v := fx.set.Evaluate(context.Background(), ev)
		if v.Allow && (arg != "" || !bytes.Equal(payload, good.Signatures[1].Payload) && !validPayloadFor(payload, fx.image)) {
			t.Fatalf("allowed unexpected evidence: %q %q %q", cmdline, arg, payload)
		}
	})
}

func validPayloadFor(payload []byte, digest string) bool {
	d, err := payloadDigest(payload)
	return err == nil && d == digest
}
