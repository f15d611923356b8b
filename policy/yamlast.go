package policy

import (
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// parser walks one policy file's YAML tree and collects every problem.
type parser struct {
	file string
	src  []byte
	errs ErrorList
}

func (p *parser) errAt(n *yaml.Node, hint, format string, a ...any) {
	e := &Error{File: p.file, Msg: fmt.Sprintf(format, a...), Hint: hint}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	p.errs = append(p.errs, e)
}

// kindName names a node's type the way an admin reads it.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "nothing (null)"
		case "!!bool":
			return "a boolean"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!timestamp":
			return "a timestamp"
		case "!!str":
			return "a string"
		case "!!binary":
			return "binary data"
		}
		return "a scalar tagged " + n.Tag
	}
	return "an unknown node"
}

// field is one key/value pair of a mapping.
type field struct {
	key, val *yaml.Node
}

// mapping checks that n is a mapping with known, unique string keys and
// returns its fields by name. Unknown and duplicate keys are reported.
func (p *parser) mapping(n *yaml.Node, what string, known ...string) map[string]field {
	if n.Kind != yaml.MappingNode {
		p.errAt(n, "write it as 'key: value' lines indented under "+what, "%s: expected a mapping, got %s", what, kindName(n))
		return nil
	}
	out := make(map[string]field, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			p.errAt(k, "keys here are plain words such as "+strings.Join(known, ", "), "%s: key must be a string, got %s", what, kindName(k))
			continue
		}
		if k.Value == "<<" {
			p.errAt(k, "write the fields out; merge keys are not supported", "%s: YAML merge key '<<' is not allowed in a policy", what)
			continue
		}
		if prev, dup := out[k.Value]; dup {
			p.errAt(k, "remove one of them", "%s: duplicate key %q (first at line %d, column %d)", what, k.Value, prev.key.Line, prev.key.Column)
			continue
		}
		if !contains(known, k.Value) {
			hint := "known fields: " + strings.Join(known, ", ")
			if s := suggest(k.Value, known); s != "" {
				hint = fmt.Sprintf("did you mean %q? %s", s, hint)
			}
			p.errAt(k, hint, "%s: unknown field %q", what, k.Value)
			continue
		}
		out[k.Value] = field{key: k, val: v}
	}
	return out
}

// entries checks that n is a mapping with unique keys (any key) and returns
// its pairs in order; used for user-named maps such as signers and host.pcrs.
func (p *parser) entries(n *yaml.Node, what, hint string) []field {
	if n.Kind != yaml.MappingNode {
		p.errAt(n, hint, "%s: expected a mapping, got %s", what, kindName(n))
		return nil
	}
	seen := map[string]*yaml.Node{}
	var out []field
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errAt(k, hint, "%s: key must be a scalar, got %s", what, kindName(k))
			continue
		}
		if prev, dup := seen[k.Value]; dup {
			p.errAt(k, "remove one of them", "%s: duplicate key %q (first at line %d, column %d)", what, k.Value, prev.Line, prev.Column)
			continue
		}
		seen[k.Value] = k
		out = append(out, field{key: k, val: v})
	}
	return out
}

// str returns a string scalar's value.
func (p *parser) str(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		p.errAt(n, "quote the value if it is meant as text", "%s: expected a string, got %s", what, kindName(n))
		return "", false
	}
	return n.Value, true
}

// seq returns a list's items.
func (p *parser) seq(n *yaml.Node, what string) ([]*yaml.Node, bool) {
	if n.Kind != yaml.SequenceNode {
		p.errAt(n, "write a list: '[a, b]' or one '- item' per line", "%s: expected a list, got %s", what, kindName(n))
		return nil, false
	}
	return n.Content, true
}

// strList returns a list of strings, reporting every non-string item.
func (p *parser) strList(n *yaml.Node, what string) ([]string, []*yaml.Node, bool) {
	items, ok := p.seq(n, what)
	if !ok {
		return nil, nil, false
	}
	out := make([]string, 0, len(items))
	nodes := make([]*yaml.Node, 0, len(items))
	allOK := true
	for i, it := range items {
		s, ok := p.str(it, fmt.Sprintf("%s[%d]", what, i))
		if !ok {
			allOK = false
			continue
		}
		out = append(out, s)
		nodes = append(nodes, it)
	}
	return out, nodes, allOK
}

// checkNoAliases reports every anchor and alias: policies are written out
// in full, which also rules out alias expansion bombs.
func (p *parser) checkNoAliases(n *yaml.Node, depth int) {
	if depth > 64 {
		p.errAt(n, "flatten the document", "nesting deeper than 64 levels")
		return
	}
	if n.Kind == yaml.AliasNode {
		p.errAt(n, "write the value out in full", "YAML aliases (*%s) are not allowed in a policy", n.Value)
		return
	}
	if n.Anchor != "" {
		p.errAt(n, "write the value out in full", "YAML anchors (&%s) are not allowed in a policy", n.Anchor)
	}
	for _, c := range n.Content {
		p.checkNoAliases(c, depth+1)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest returns the known name closest to s if it is a plausible typo.
func suggest(s string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(strings.ToLower(s), k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
