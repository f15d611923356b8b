package policy

import (
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
