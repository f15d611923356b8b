package attestdcmd

import (
	"flag"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/fsutil"
	"go.yaml.in/yaml/v3"
)

// maxConfigFile bounds a --config file.
const maxConfigFile = 1 << 20

// applyConfig sets fs's flags from a YAML file of `flag-name: value` (a
// list of values for a repeatable flag such as ek-ca), for every flag not
// given on the command line: the command line wins. The file is strict: an
// unknown name, a value of the wrong shape or one the flag refuses is a
// usage error naming FILE:LINE.
//
//	data: /srv/attestd
//	listen: ":8443"
//	ek-ca: [/etc/bulwark/ek-root.pem, /etc/bulwark/ek-intermediate.pem]
//	peer-rate: 50
func applyConfig(fs *flag.FlagSet, path string) error {
	data, err := fsutil.ReadFileLimit(path, maxConfigFile)
	if err != nil {
		return cli.Usagef("--config: %v", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return cli.Usagef("--config %s: %v", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // an empty file sets nothing
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return cli.Usagef("--config %s:%d: want a mapping of setting: value (the flag names of attestd serve)", path, root.Line)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		name := k.Value
		f := fs.Lookup(name)
		if f == nil || name == "config" {
			return cli.Usagef("--config %s:%d: unknown setting %q (the settings are attestd serve's flag names: attestd serve --help)", path, k.Line, name)
		}
		if line, dup := seen[name]; dup {
			return cli.Usagef("--config %s:%d: %q is set twice (first at line %d)", path, k.Line, name, line)
		}
		seen[name] = k.Line
		var values []*yaml.Node
		switch v.Kind {
		case yaml.ScalarNode:
			values = []*yaml.Node{v}
		case yaml.SequenceNode:
			if !isRepeatable(f) {
				return cli.Usagef("--config %s:%d: %s takes one value, not a list", path, v.Line, name)
			}
			values = v.Content
		default:
			return cli.Usagef("--config %s:%d: %s: want a value or a list of values", path, v.Line, name)
		}
		if given[name] {
			continue // the command line wins
		}
		for _, it := range values {
			if it.Kind != yaml.ScalarNode || it.ShortTag() == "!!null" {
				return cli.Usagef("--config %s:%d: %s: want a plain value", path, it.Line, name)
			}
			if err := fs.Set(name, it.Value); err != nil {
				return cli.Usagef("--config %s:%d: %s %q: %v", path, it.Line, name, it.Value, err)
			}
		}
	}
	return nil
}

// isRepeatable reports whether a flag collects several values (cli.Strings).
func isRepeatable(f *flag.Flag) bool {
	_, ok := f.Value.(*cli.Strings)
	return ok
}
