package policy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const examplesDir = "../docs/examples/policies"

func TestExamplesLoad(t *testing.T) {
	set, err := LoadDir(examplesDir, LoadOptions{})
	if err != nil {
		t.Fatalf("examples in %s do not load:\n%v", examplesDir, err)
	}
	want := []string{"batch", "vault-node", "web"}
	if got := set.Names(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("names = %v, want %v", got, want)
	}
}

var yamlBlockRE = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// TestDocExamples parses every complete policy (a yaml block starting with
// apiVersion) in docs/policy.md, as if it lived in the examples directory.
func TestDocExamples(t *testing.T) {
	md, err := os.ReadFile("../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i, m := range yamlBlockRE.FindAllSubmatch(md, -1) {
		block := m[1]
		if !strings.HasPrefix(strings.TrimLeft(string(block), "# \n"), "apiVersion:") && !strings.Contains(string(block), "\napiVersion:") {
			continue
		}
		n++
		path := filepath.Join(examplesDir, "doc-example.yaml")
		if _, err := Parse(path, block, LoadOptions{}); err != nil {
			t.Errorf("docs/policy.md yaml block %d does not parse:\n%v\n%s", i+1, err, block)
		}
	}
	if n < 3 {
		t.Fatalf("found %d complete policies in docs/policy.md, want at least 3", n)
	}
}
