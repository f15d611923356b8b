package policy

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// nodeToJSON converts a YAML tree to JSON-able values, keeping every
// mapping key as a string (PCR indexes are integers in YAML).
func nodeToJSON(n *yaml.Node) any {
	switch n.Kind {
	case yaml.DocumentNode:
		return nodeToJSON(n.Content[0])
	case yaml.MappingNode:
		m := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			m[n.Content[i].Value] = nodeToJSON(n.Content[i+1])
		}
		return m
	case yaml.SequenceNode:
		l := []any{}
		for _, c := range n.Content {
			l = append(l, nodeToJSON(c))
		}
		return l
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		var v float64
		if err := n.Decode(&v); err == nil && !strings.HasPrefix(n.Value, "0") {
			return v
		}
	case "!!bool":
		var v bool
		_ = n.Decode(&v)
		return v
	case "!!null":
		return nil
	}
	return n.Value
}

const validateScript = `
import json, sys
from jsonschema import Draft202012Validator, FormatChecker
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
v = Draft202012Validator(schema, format_checker=FormatChecker())
for path in sys.argv[2:]:
    errs = sorted(v.iter_errors(json.load(open(path))), key=lambda e: e.path)
    print(path, "invalid" if errs else "valid", "; ".join(e.message for e in errs)[:300])
`

// TestSchema checks docs/policy.schema.json with an independent validator
// (Python jsonschema): every example is valid, and typical mistakes are not.
func TestSchema(t *testing.T) {
	// Debian's python3-jsonschema is for /usr/bin/python3, which another
	// python3 earlier in PATH may hide.
	py := ""
	for _, cand := range []string{"python3", "/usr/bin/python3"} {
		if p, err := exec.LookPath(cand); err == nil && exec.Command(p, "-c", "import jsonschema").Run() == nil {
			py = p
			break
		}
	}
	if py == "" {
		t.Skip("python3 with jsonschema not found: apt-get install python3-jsonschema")
	}
	dir := t.TempDir()
	docs := map[string]string{} // name → yaml
	ents, _ := os.ReadDir(examplesDir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".yaml") {
			b, _ := os.ReadFile(filepath.Join(examplesDir, e.Name()))
			docs["valid-"+e.Name()] = string(b)
		}
	}
	md, _ := os.ReadFile("../docs/policy.md")
	for i, m := range yamlBlockRE.FindAllSubmatch(md, -1) {
		if strings.Contains(string(m[1]), "apiVersion:") {
			docs["valid-doc-"+string(rune('a'+i))] = string(m[1])
		}
	}
	docs["valid-minimal"] = minimal
	docs["invalid-unknown"] = minimal + "kernal: {}\n"
	docs["invalid-digest"] = strings.Replace(minimal, dA, "sha256:abc", 1)
	docs["invalid-version"] = strings.Replace(minimal, "v1", "v2", 1)
	docs["invalid-no-cmdline"] = strings.Replace(minimal, "cmdline:\n  exact: [\"console=ttyS0\"]\n", "", 1)
	docs["invalid-pcr"] = minimal + "host: {pcrs: {24: [" + strings.Repeat("0", 64) + "]}}\n"
	docs["invalid-pcr-unquoted"] = minimal + "host: {pcrs: {10: [" + strings.Repeat("0", 64) + "]}}\n"
	docs["valid-pcr-boot-loader"] = minimal + "host: {pcrs: {9: [" + strings.Repeat("0", 64) + "]}}\n"
	docs["valid-host-cmdline"] = minimal + "host: {kernel_cmdline: {require: [lockdown=integrity], forbid: [init, \"kgdboc=*\"]}}\n"
	docs["invalid-host-cmdline-empty"] = minimal + "host: {kernel_cmdline: {}}\n"
	docs["invalid-host-cmdline-pattern"] = minimal + "host: {kernel_cmdline: {forbid: [\"init*\"]}}\n"
	docs["invalid-host-cmdline-field"] = minimal + "host: {kernel_cmdline: {contains: [ro]}}\n"
	docs["invalid-args"] = minimal + "args: {allow: some}\n"
	docs["invalid-time"] = minimal + "valid: {not_after: tomorrow}\n"
	docs["invalid-pattern"] = strings.Replace(minimal, `exact: ["console=ttyS0"]`, `params: {allow: ["con*"]}`, 1)
	docs["invalid-pattern-nbsp"] = strings.Replace(minimal, `exact: ["console=ttyS0"]`, `params: {allow: ["loglevel=8\u00a0kprobe_event=x"]}`, 1)
	docs["invalid-pattern-quote"] = strings.Replace(minimal, `exact: ["console=ttyS0"]`, `params: {allow: ['a="b c"']}`, 1)
	var paths []string
	for name, doc := range docs {
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, err := json.Marshal(nodeToJSON(&n))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name+".json")
		writeFile(t, p, b)
		paths = append(paths, p)
	}
	out, err := exec.Command(py, append([]string{"-c", validateScript, "../docs/policy.schema.json"}, paths...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("validator: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(docs) {
		t.Fatalf("validator printed %d lines for %d documents:\n%s", len(lines), len(docs), out)
	}
	for _, l := range lines {
		f := strings.Fields(l)
		name := strings.TrimSuffix(filepath.Base(f[0]), ".json")
		want := "valid"
		if strings.HasPrefix(name, "invalid-") {
			want = "invalid"
		}
		if f[1] != want {
			t.Errorf("schema says %s is %s, want %s: %s", name, f[1], want, l)
		}
	}
}
