package policy

import (
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/bulwark-project/bulwark/measure"
)

// EnvRule says which environment variables a launch may set over the
// image's (launcher run -e, --env-file; LaunchEvent.EnvKeys). The zero
// value (no env section) allows none, as ArgsRule allows no command
// override: a variable can change what the image's code does (LD_PRELOAD,
// a debug switch). Values are recorded only as a digest; CEL rules can pin
// it (env_digest).
type EnvRule struct {
	Any  bool     // allow: any
	Keys []string // keys: these names only
}

// NetworkRule says which guest networks a launch may have
// (LaunchEvent.Network: "none", "user" or "tap"). No network section allows
// "none" only.
type NetworkRule struct {
	Allow []string
}

// VolumeRule says which volumes a launch may add to the workload's root
// (LaunchEvent.Volumes). No volumes section allows none.
type VolumeRule struct {
	Any     bool         // allow: any read-only volume
	Digests []string     // read-only volumes with these disk digests
	Tmpfs   bool         // tmpfs scratch mounts
	Scratch *ScratchRule // writable scratch disks; nil: none
}

// ScratchRule says which writable scratch disks (launcher run --scratch;
// "scratch:TARGET:BYTES" volumes) a launch may have: each at most MaxSize
// bytes (0: any size the launcher accepts) and, when Paths is not empty,
// mounted at one of Paths.
type ScratchRule struct {
	MaxSize int64
	Paths   []string
}

// networkModes are the values network.allow may list.
var networkModes = []string{"none", "user", "tap"}

// env parses the top-level env section.
func (p *parser) env(n *yaml.Node, pol *Policy) {
	f := p.mapping(n, "env", "allow", "keys")
	if f == nil {
		return
	}
	al, hasAl := f["allow"]
	ks, hasKs := f["keys"]
	switch {
	case hasAl && hasKs:
		p.errAt(ks.key, "drop allow when listing keys", "env: give allow or keys, not both")
	case hasAl:
		if s, ok := p.str(al.val, "env.allow"); ok {
			switch s {
			case "any":
				pol.Env.Any = true
			case "none":
			default:
				p.errAt(al.val, "write 'any' (any variable) or 'none' (the image's environment only)", "env.allow: %q is not 'any' or 'none'", truncate(s, 40))
			}
		}
	case hasKs:
		keys, nodes, _ := p.strList(ks.val, "env.keys")
		for i, k := range keys {
			if err := measure.CheckEnvKey(k); err != nil {
				p.errAt(nodes[i], "write the variable's name only, without '=VALUE'", "env.keys: %v", err)
				continue
			}
			if slices.Contains(pol.Env.Keys, k) {
				p.errAt(nodes[i], "remove the duplicate", "env.keys: %q listed twice", k)
				continue
			}
			pol.Env.Keys = append(pol.Env.Keys, k)
		}
	default:
		p.errAt(n, "add 'allow: any', 'allow: none' or 'keys: [NAME, ...]'", "env: neither allow nor keys given")
	}
}

// network parses the top-level network section.
func (p *parser) network(n *yaml.Node, pol *Policy) {
	f := p.mapping(n, "network", "allow")
	if f == nil {
		return
	}
	al, ok := f["allow"]
	if !ok {
		p.errAt(n, "add 'allow: [none, user]'", "network: missing allow")
		return
	}
	modes, nodes, _ := p.strList(al.val, "network.allow")
	r := &NetworkRule{Allow: []string{}}
	for i, m := range modes {
		switch {
		case !slices.Contains(networkModes, m):
			p.errAt(nodes[i], "the modes are none (no network device), user (QEMU user-mode networking) and tap (a pod's network namespace, CNI)", "network.allow: %q is not a network mode", truncate(m, 40))
		case slices.Contains(r.Allow, m):
			p.errAt(nodes[i], "remove the duplicate", "network.allow: %q listed twice", m)
		default:
			r.Allow = append(r.Allow, m)
		}
	}
	pol.Network = r
}

// volumes parses the top-level volumes section.
func (p *parser) volumes(n *yaml.Node, pol *Policy) {
	f := p.mapping(n, "volumes", "allow", "digests", "tmpfs", "scratch")
	if f == nil {
		return
	}
	r := &VolumeRule{}
	al, hasAl := f["allow"]
	ds, hasDs := f["digests"]
	if hasAl && hasDs {
		p.errAt(ds.key, "drop allow when listing digests", "volumes: give allow or digests, not both")
	}
	if hasAl {
		if s, ok := p.str(al.val, "volumes.allow"); ok {
			switch s {
			case "any":
				r.Any = true
			case "none":
			default:
				p.errAt(al.val, "write 'any' (any read-only volume) or 'none'", "volumes.allow: %q is not 'any' or 'none'", truncate(s, 40))
			}
		}
	}
	if hasDs {
		r.Digests = p.digestList(ds.val, "volumes.digests")
	}
	if v, ok := f["tmpfs"]; ok {
		if v.val.Kind != yaml.ScalarNode || v.val.ShortTag() != "!!bool" {
			p.errAt(v.val, "write 'tmpfs: true' to allow --tmpfs scratch mounts", "volumes.tmpfs: expected true or false, got %s", kindName(v.val))
		} else {
			r.Tmpfs = v.val.Value == "true"
		}
	}
	if v, ok := f["scratch"]; ok {
		r.Scratch = p.scratch(v.val)
	}
	if !hasAl && !hasDs {
		_, hasTmpfs := f["tmpfs"]
		_, hasScratch := f["scratch"]
		if !hasTmpfs && !hasScratch {
			p.errAt(n, "add 'allow: any', 'digests: [...]', 'tmpfs: true' or 'scratch: {...}'", "volumes: nothing allowed or pinned")
		}
	}
	pol.Volumes = r
}

// scratch parses volumes.scratch: {max_size: SIZE, paths: [PATH, ...]},
// either or both (an empty mapping allows any scratch disk).
func (p *parser) scratch(n *yaml.Node) *ScratchRule {
	f := p.mapping(n, "volumes.scratch", "max_size", "paths")
	if f == nil {
		return nil
	}
	r := &ScratchRule{}
	if v, ok := f["max_size"]; ok {
		if v.val.Kind != yaml.ScalarNode || v.val.Tag == "!!null" {
			p.errAt(v.val, "write a size such as 4g, 512m or a number of bytes", "volumes.scratch.max_size: expected a size, got %s", kindName(v.val))
		} else if n, err := measure.ParseSize(v.val.Value); err != nil || n <= 0 {
			p.errAt(v.val, "write a size such as 4g, 512m or a number of bytes", "volumes.scratch.max_size: %q is not a size", truncate(v.val.Value, 40))
		} else {
			r.MaxSize = n
		}
	}
	if v, ok := f["paths"]; ok {
		paths, nodes, _ := p.strList(v.val, "volumes.scratch.paths")
		r.Paths = []string{}
		for i, t := range paths {
			if err := measure.CheckScratchTarget(t); err != nil {
				p.errAt(nodes[i], "write an absolute, clean path where a scratch disk may be mounted", "volumes.scratch.paths: %v", err)
				continue
			}
			if slices.Contains(r.Paths, t) {
				p.errAt(nodes[i], "remove the duplicate", "volumes.scratch.paths: %q listed twice", t)
				continue
			}
			r.Paths = append(r.Paths, t)
		}
	}
	return r
}

// workload judges what the launch sets beside its command: environment,
// network and volumes. (Working directory and user are for CEL rules.)
func (e *evaluation) workload() {
	ev := e.ev.Event
	r := e.pol.Volumes
	if r == nil {
		r = &VolumeRule{}
	}
	for _, s := range ev.Volumes {
		v, err := measure.ParseVolume(s)
		switch {
		case err != nil:
			e.deny("volumes: %v", err)
		case v.Kind == measure.VolumeTmpfs && !r.Tmpfs:
			e.deny("volumes: tmpfs at %q is not allowed (volumes.tmpfs)", truncate(v.Target, 80))
		case v.Kind == measure.VolumeReadOnly && !r.Any && !slices.Contains(r.Digests, v.Digest):
			e.deny("volumes: read-only volume %s at %q is not one the policy allows", v.Digest, truncate(v.Target, 80))
		case v.Kind == measure.VolumeScratch && r.Scratch == nil:
			e.deny("volumes: scratch disk at %q is not allowed (volumes.scratch)", truncate(v.Target, 80))
		case v.Kind == measure.VolumeScratch && r.Scratch.MaxSize > 0 && v.Size > r.Scratch.MaxSize:
			e.deny("volumes: scratch disk at %q of %d bytes is larger than the policy allows (volumes.scratch.max_size: %d)", truncate(v.Target, 80), v.Size, r.Scratch.MaxSize)
		case v.Kind == measure.VolumeScratch && r.Scratch.Paths != nil && !slices.Contains(r.Scratch.Paths, v.Target):
			e.deny("volumes: scratch disk at %q is not at a path the policy allows (volumes.scratch.paths)", truncate(v.Target, 80))
		}
	}
	if len(ev.EnvKeys) > 0 && !e.pol.Env.Any {
		if len(e.pol.Env.Keys) == 0 {
			e.deny("env: variables %s set over the image's environment; this policy allows none (env.allow: none)", listKeys(ev.EnvKeys))
		} else {
			var bad []string
			for _, k := range ev.EnvKeys {
				if !slices.Contains(e.pol.Env.Keys, k) {
					bad = append(bad, k)
				}
			}
			if len(bad) > 0 {
				e.deny("env: variables %s are not among those the policy allows (env.keys)", listKeys(bad))
			}
		}
	}
	mode := networkClaim(ev.Network)
	allowed := []string{"none"}
	if e.pol.Network != nil {
		allowed = e.pol.Network.Allow
	}
	if !slices.Contains(allowed, mode) {
		e.deny("network: %q is not allowed (allowed: %s)", truncate(mode, 40), strings.Join(quoteAll(allowed), ", "))
	}
}

// networkClaim names a launch's network: "none", "user" or "tap".
func networkClaim(n string) string {
	if n == "" {
		return "none"
	}
	return n
}

func listKeys(keys []string) string {
	q := quoteAll(keys[:min(8, len(keys))])
	if len(keys) > 8 {
		q = append(q, fmt.Sprintf("and %d more", len(keys)-8))
	}
	return strings.Join(q, ", ")
}

func quoteAll(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = fmt.Sprintf("%q", truncate(s, 64))
	}
	return out
}
