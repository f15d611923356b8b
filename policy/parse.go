package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

// Size limits on what is read from the policy directory.
const (
	MaxPolicySize = 1 << 20  // one policy file
	MaxKeySize    = 64 << 10 // one PEM public key file
	maxListItems  = 4096     // items in any one list
	maxRules      = 64
	maxExprLen    = 4096
)

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	secretRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
)

// ValidName reports whether s may name a policy, a signer or a rule:
// 1-63 of [a-z0-9._-], starting with a letter or digit.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// LoadOptions controls how policy files are read.
type LoadOptions struct {
	// RequireSigned refuses every policy file (and every key file a policy
	// refers to) without a detached signature FILE.sig that verifies with
	// one of AdminKeys.
	RequireSigned bool
	// AdminKeys are the keys whose signatures make a policy file trusted.
	// Signatures are verified whenever a .sig file is present and AdminKeys
	// is not empty, even when RequireSigned is false.
	AdminKeys []*Signer
}

// NewLoadOptions reads the admins' public keys (PEM files) and returns the
// options to load policies with. Requiring signatures without any key is an
// error: nothing could ever load.
func NewLoadOptions(requireSigned bool, adminKeyFiles []string) (LoadOptions, error) {
	if requireSigned && len(adminKeyFiles) == 0 {
		return LoadOptions{}, errors.New("requiring signed policies needs at least one admin key (--policy-key)")
	}
	opts := LoadOptions{RequireSigned: requireSigned}
	for _, f := range adminKeyFiles {
		k, err := LoadPublicKeyFile(f)
		if err != nil {
			return LoadOptions{}, fmt.Errorf("--policy-key %s: %w", f, err)
		}
		opts.AdminKeys = append(opts.AdminKeys, k)
	}
	return opts, nil
}

// ParseFile reads and parses one policy file.
func ParseFile(path string, opts LoadOptions) (*Policy, error) {
	data, signed, rerr := readVerified(path, MaxPolicySize, opts)
	if rerr != nil {
		return nil, ErrorList{rerr}
	}
	p, err := parse(path, data, opts)
	if p != nil {
		p.Signed = signed
	}
	return p, err
}

// Parse parses policy bytes as if read from path: path is used in error
// positions and to resolve signer key files. It does not check a signature
// of data itself (use ParseFile for that); key files it reads are checked as
// opts says. The error, if any, is an ErrorList with every problem found.
func Parse(path string, data []byte, opts LoadOptions) (*Policy, error) {
	return parse(path, data, opts)
}

func parse(path string, data []byte, opts LoadOptions) (*Policy, error) {
	p := &parser{file: path, src: data}
	if len(data) > MaxPolicySize {
		p.errAt(nil, "split it into several policies", "file is %d bytes, larger than the %d byte limit", len(data), MaxPolicySize)
		return nil, p.errs.Err()
	}
	root, err := decodeOne(data)
	if err != nil {
		p.errs = append(p.errs, yamlError(path, err))
		return nil, p.errs.Err()
	}
	p.checkNoAliases(root, 0)
	if len(p.errs) > 0 {
		return nil, p.errs.Err()
	}
	pol := p.policy(root, filepath.Dir(path), opts)
	if err := p.errs.Err(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	pol.File = path
	pol.Digest = "sha256:" + hex.EncodeToString(sum[:])
	return pol, nil
}

// decodeOne decodes exactly one YAML document into its root mapping node.
func decodeOne(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{Msg: "file is empty", Hint: "start with 'apiVersion: " + APIVersion + "'"}
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &Error{Line: extra.Line, Column: extra.Column, Msg: "a second YAML document ('---') in the file", Hint: "put one policy per file"}
	} else if !errors.Is(err, io.EOF) {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, &Error{Line: 1, Column: 1, Msg: "not a YAML document"}
	}
	return doc.Content[0], nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlError turns a YAML syntax error into a positioned Error.
func yamlError(path string, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		e.File = path
		return e
	}
	msg := err.Error()
	line := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	col := 0
	if line > 0 {
		col = 1
	}
	return &Error{File: path, Line: line, Column: col, Msg: "YAML syntax: " + msg, Hint: "check indentation (spaces, not tabs) and quoting on or just before this line"}
}

var topFields = []string{"apiVersion", "name", "description", "valid", "signers", "kernel", "initrd", "cmdline", "image", "args", "env", "network", "volumes", "templates", "host", "secrets", "on_revoke", "rules"}

func (p *parser) policy(root *yaml.Node, dir string, opts LoadOptions) *Policy {
	pol := &Policy{Signers: map[string]*Signer{}}
	f := p.mapping(root, "policy", topFields...)
	if f == nil {
		return pol
	}
	if v, ok := f["apiVersion"]; !ok {
		p.errAt(root, "add 'apiVersion: "+APIVersion+"' as the first line", "missing apiVersion")
	} else if s, ok := p.str(v.val, "apiVersion"); ok && s != APIVersion {
		p.errAt(v.val, "this Bulwark reads 'apiVersion: "+APIVersion+"'", "unsupported apiVersion %q", s)
	}
	if v, ok := f["name"]; !ok {
		p.errAt(root, "add 'name: my-policy'; launches ask for a policy by this name", "missing name")
	} else if s, ok := p.str(v.val, "name"); ok {
		if !nameRE.MatchString(s) {
			p.errAt(v.val, "use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63 characters", "name %q is not a valid policy name", s)
		}
		pol.Name = s
	}
	if v, ok := f["description"]; ok {
		pol.Description, _ = p.str(v.val, "description")
	}
	if v, ok := f["valid"]; ok {
		p.validity(v.val, pol)
	}
	if v, ok := f["signers"]; ok {
		p.signers(v.val, dir, pol, opts)
	}
	if v, ok := f["kernel"]; !ok {
		p.errAt(root, "add a kernel section with digests and/or signers", "missing kernel: every policy must say which kernels may boot")
	} else {
		pol.Kernel = p.artifact(v.val, "kernel", pol)
	}
	if v, ok := f["initrd"]; ok {
		pol.Initrd = p.artifact(v.val, "initrd", pol)
	}
	if v, ok := f["cmdline"]; !ok {
		p.errAt(root, "add 'cmdline: {exact: [\"...\"]}' or 'cmdline: {params: {allow: [...]}}'", "missing cmdline: every policy must say which kernel command lines are allowed")
	} else {
		pol.Cmdline = p.cmdline(v.val)
	}
	if v, ok := f["image"]; ok {
		pol.Image = p.artifact(v.val, "image", pol)
	}
	if v, ok := f["args"]; ok {
		p.args(v.val, pol)
	}
	if v, ok := f["env"]; ok {
		p.env(v.val, pol)
	}
	if v, ok := f["network"]; ok {
		p.network(v.val, pol)
	}
	if v, ok := f["volumes"]; ok {
		p.volumes(v.val, pol)
	}
	if v, ok := f["templates"]; ok {
		p.templates(v.val, pol)
	}
	if v, ok := f["host"]; ok {
		p.host(v.val, pol)
	}
	if v, ok := f["secrets"]; ok {
		p.secrets(v.val, pol)
	}
	if v, ok := f["rules"]; ok {
		p.rules(v.val, pol)
	}
	pol.OnRevoke = OnRevokeStop
	if v, ok := f["on_revoke"]; ok {
		if s, ok := p.str(v.val, "on_revoke"); ok {
			switch s {
			case OnRevokeStop, OnRevokeWipeSecrets:
				pol.OnRevoke = s
			default:
				p.errAt(v.val, "write 'on_revoke: stop' (the default) or 'on_revoke: wipe-secrets'", "on_revoke: %q is not an action", truncate(s, 80))
			}
		}
	}
	return pol
}

func (p *parser) timestamp(n *yaml.Node, what string) (time.Time, bool) {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!str" && n.ShortTag() != "!!timestamp") {
		p.errAt(n, "write an RFC 3339 time such as 2026-01-31T00:00:00Z", "%s: expected a time, got %s", what, kindName(n))
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, n.Value)
	if err != nil {
		p.errAt(n, "write an RFC 3339 time such as 2026-01-31T00:00:00Z (date, 'T', time, and 'Z' or an offset)", "%s: %q is not an RFC 3339 time", what, n.Value)
		return time.Time{}, false
	}
	return t, true
}

func (p *parser) validity(n *yaml.Node, pol *Policy) {
	f := p.mapping(n, "valid", "not_before", "not_after")
	if f == nil {
		return
	}
	if len(f) == 0 {
		p.errAt(n, "give not_before, not_after or both, or remove 'valid'", "valid: empty validity window")
	}
	okB, okA := false, false
	if v, ok := f["not_before"]; ok {
		pol.NotBefore, okB = p.timestamp(v.val, "valid.not_before")
	}
	if v, ok := f["not_after"]; ok {
		pol.NotAfter, okA = p.timestamp(v.val, "valid.not_after")
	}
	if okB && okA && !pol.NotAfter.After(pol.NotBefore) {
		p.errAt(f["not_after"].val, "not_after must be later than not_before", "valid: window is empty: not_after %s is not after not_before %s",
			pol.NotAfter.Format(time.RFC3339), pol.NotBefore.Format(time.RFC3339))
	}
}

func (p *parser) signers(n *yaml.Node, dir string, pol *Policy, opts LoadOptions) {
	for _, e := range p.entries(n, "signers", "write 'NAME: {public_key: PEM}' or 'NAME: {public_key_file: PATH}' entries") {
		name := e.key.Value
		if !nameRE.MatchString(name) {
			p.errAt(e.key, "use lowercase letters, digits, '.', '_' and '-'", "signers: %q is not a valid signer name", name)
			continue
		}
		what := "signers." + name
		f := p.mapping(e.val, what, "public_key", "public_key_file")
		if f == nil {
			continue
		}
		inline, hasInline := f["public_key"]
		file, hasFile := f["public_key_file"]
		var pemBytes []byte
		var at *yaml.Node
		switch {
		case hasInline && hasFile:
			p.errAt(file.key, "keep one of them", "%s: give public_key or public_key_file, not both", what)
			continue
		case hasInline:
			s, ok := p.str(inline.val, what+".public_key")
			if !ok {
				continue
			}
			pemBytes, at = []byte(s), inline.val
		case hasFile:
			s, ok := p.str(file.val, what+".public_key_file")
			if !ok {
				continue
			}
			at = file.val
			path := s
			if !filepath.IsAbs(path) {
				path = filepath.Join(dir, path)
			}
			data, _, err := readVerified(path, MaxKeySize, opts)
			if err != nil {
				if err.Hint == hintCheckPath {
					err.Hint = "check the path; a relative path is relative to the policy file"
				}
				p.errAt(file.val, err.Hint, "%s.public_key_file: %s", what, err.Msg)
				continue
			}
			pol.keyFiles = append(pol.keyFiles, path)
			pemBytes = data
		default:
			p.errAt(e.val, "add public_key (inline PEM) or public_key_file (path relative to this file)", "%s: no key given", what)
			continue
		}
		s, err := ParsePublicKey(name, pemBytes)
		if err != nil {
			p.errAt(at, "give a PEM 'PUBLIC KEY' block as written by 'launcher keygen' or 'cosign generate-key-pair' (ECDSA P-256 or RSA)", "%s: %v", what, err)
			continue
		}
		pol.Signers[name] = s
	}
}

func (p *parser) digestList(n *yaml.Node, what string) []string {
	items, nodes, _ := p.strList(n, what)
	if len(items) > maxListItems {
		p.errAt(n, "split the policy", "%s: more than %d entries", what, maxListItems)
		return nil
	}
	var out []string
	for i, d := range items {
		if err := checkDigest(d); err != "" {
			p.errAt(nodes[i], "digests are 'sha256:' followed by 64 lowercase hex digits; 'launcher policy init' computes them", "%s: malformed digest %q: %s", what, truncate(d, 80), err)
			continue
		}
		out = append(out, d)
	}
	return out
}

// checkDigest says what is wrong with a digest string, or "". Digests are
// "sha256:<64 hex>" (the default everywhere) or "sha384:<96 hex>".
func checkDigest(d string) string {
	if _, _, err := measure.ParseDigest(d); err == nil {
		return ""
	}
	alg, hexPart, ok := strings.Cut(d, ":")
	want := 64
	if alg == "sha384" {
		want = 96
	}
	switch {
	case !ok:
		return "missing the 'sha256:' prefix"
	case alg != "sha256" && alg != "sha384":
		return fmt.Sprintf("algorithm %q is not supported, only sha256 (or sha384)", truncate(alg, 20))
	case len(hexPart) != want:
		return fmt.Sprintf("%d hex digits, want %d", len(hexPart), want)
	case digestOK(alg + ":" + strings.ToLower(hexPart)):
		return "uppercase hex; write it in lowercase"
	default:
		return "not hexadecimal"
	}
}

func (p *parser) artifact(n *yaml.Node, what string, pol *Policy) *ArtifactRule {
	f := p.mapping(n, what, "digests", "signers")
	if f == nil {
		return &ArtifactRule{}
	}
	r := &ArtifactRule{}
	if v, ok := f["digests"]; ok {
		r.HasDigests = true
		r.Digests = p.digestList(v.val, what+".digests")
	}
	if v, ok := f["signers"]; ok {
		r.HasSigners = true
		names, nodes, _ := p.strList(v.val, what+".signers")
		for i, name := range names {
			s, ok := pol.Signers[name]
			if !ok {
				hint := "define it under the top-level 'signers:' mapping"
				if len(pol.Signers) > 0 {
					hint += "; defined: " + strings.Join(sortedKeys(pol.Signers), ", ")
				}
				p.errAt(nodes[i], hint, "%s.signers: unknown signer %q", what, name)
				continue
			}
			r.Signers = append(r.Signers, s)
		}
	}
	if !r.HasDigests && !r.HasSigners && len(n.Content) == 0 {
		// (with only unknown fields, their errors already say what to fix)
		p.errAt(n, "list allowed digests, signer names, or both (both must then match)", "%s: neither digests nor signers given", what)
	}
	return r
}

func (p *parser) cmdline(n *yaml.Node) *CmdlineRule {
	r := &CmdlineRule{}
	f := p.mapping(n, "cmdline", "exact", "params")
	if f == nil {
		return r
	}
	ex, hasEx := f["exact"]
	pa, hasPa := f["params"]
	switch {
	case hasEx && hasPa:
		p.errAt(pa.key, "use exact for fixed command lines or params for parameter patterns, not both", "cmdline: give exact or params, not both")
	case !hasEx && !hasPa:
		p.errAt(n, "add 'exact: [\"console=ttyS0 ...\"]' or 'params: {allow: [...]}'", "cmdline: neither exact nor params given")
	case hasEx:
		var nodes []*yaml.Node
		r.Exact, nodes, _ = p.strList(ex.val, "cmdline.exact")
		for i, c := range r.Exact {
			if err := CheckCmdline(c); err != nil {
				p.errAt(nodes[i], "separate parameters with single spaces and use printable ASCII without '\"'; docs/policy.md says why", "cmdline.exact[%d]: %v", i, err)
			}
		}
		if r.Exact == nil {
			r.Exact = []string{}
		}
	case hasPa:
		r.Params = &ParamsRule{}
		pf := p.mapping(pa.val, "cmdline.params", "allow", "require")
		if pf == nil {
			return r
		}
		if _, ok := pf["allow"]; !ok {
			p.errAt(pa.val, "list every parameter the command line may contain, e.g. allow: [console=ttyS0, \"panic=*\"]", "cmdline.params: missing allow")
		}
		for _, k := range []string{"allow", "require"} {
			v, ok := pf[k]
			if !ok {
				continue
			}
			pats, nodes, _ := p.strList(v.val, "cmdline.params."+k)
			for i, pat := range pats {
				if msg := checkParamPattern(pat, k == "allow"); msg != "" {
					p.errAt(nodes[i], "patterns are 'flag', 'key=value' or 'key=*'", "cmdline.params.%s: pattern %q %s", k, truncate(pat, 80), msg)
				}
			}
			if k == "allow" {
				r.Params.Allow = pats
			} else {
				r.Params.Require = pats
			}
		}
		for _, req := range r.Params.Require {
			if !slices.ContainsFunc(r.Params.Allow, func(a string) bool { return patternCovers(a, req) }) {
				p.errAt(pf["require"].val, "add it to allow as well", "cmdline.params.require: %q is required but not allowed, so no command line could pass", req)
			}
		}
	}
	return r
}

func (p *parser) args(n *yaml.Node, pol *Policy) {
	f := p.mapping(n, "args", "allow", "exact")
	if f == nil {
		return
	}
	al, hasAl := f["allow"]
	ex, hasEx := f["exact"]
	if hasAl {
		if s, ok := p.str(al.val, "args.allow"); ok {
			switch s {
			case "any":
				pol.Args.Any = true
			case "none":
			default:
				p.errAt(al.val, "write 'any' (any command override) or 'none' (the image's own command only)", "args.allow: %q is not 'any' or 'none'", s)
			}
		}
	}
	if hasEx {
		if hasAl {
			p.errAt(ex.key, "drop allow when listing exact commands", "args: give allow or exact, not both")
		}
		items, _ := p.seq(ex.val, "args.exact")
		for i, it := range items {
			list, _, _ := p.strList(it, fmt.Sprintf("args.exact[%d]", i))
			if len(list) == 0 && it.Kind == yaml.SequenceNode {
				p.errAt(it, "an empty command means the image's own; it is always allowed", "args.exact[%d]: empty command", i)
			}
			pol.Args.Exact = append(pol.Args.Exact, list)
		}
	}
	if !hasAl && !hasEx {
		p.errAt(n, "add 'allow: any', 'allow: none' or 'exact: [[cmd, arg]]'", "args: neither allow nor exact given")
	}
}

func (p *parser) host(n *yaml.Node, pol *Policy) {
	f := p.mapping(n, "host", "pcrs", "secure_boot", "kernel_cmdline")
	if f == nil {
		return
	}
	if sb, ok := f["secure_boot"]; ok {
		p.hostSecureBoot(sb.val, pol)
	}
	if kc, ok := f["kernel_cmdline"]; ok {
		p.hostKernelCmdline(kc.val, pol)
	}
	v, ok := f["pcrs"]
	if !ok {
		_, sb := f["secure_boot"]
		_, kc := f["kernel_cmdline"]
		if !sb && !kc {
			p.errAt(n, "add 'pcrs: {INDEX: [HEX, ...]}', 'secure_boot: {...}' or 'kernel_cmdline: {...}', or remove 'host'", "host: missing pcrs")
		}
		return
	}
	pol.HostPCRs = map[int][][]byte{}
	for _, e := range p.entries(v.val, "host.pcrs", fmt.Sprintf("write 'INDEX: [HEX, ...]' with a PCR index 0-%d", MaxHostPCR)) {
		idx, err := strconv.Atoi(e.key.Value)
		if err != nil || idx < 0 || idx > limits.MaxPCR || e.key.ShortTag() != "!!int" {
			p.errAt(e.key, fmt.Sprintf("PCR indexes are integers 0-%d", MaxHostPCR), "host.pcrs: %q is not a PCR index", truncate(e.key.Value, 20))
			continue
		}
		if idx > MaxHostPCR {
			p.errAt(e.key, fmt.Sprintf("the launcher quotes host PCRs 0-%d beside the launch PCR (%d-%d only with the firmware event log); pin later boot stages through the launch's own measurements", MaxHostPCR, MaxAlwaysQuotedHostPCR+1, MaxHostPCR),
				"host.pcrs: PCR %d is never quoted, so this policy would deny every launch", idx)
			continue
		}
		what := fmt.Sprintf("host.pcrs.%d", idx)
		items, ok := p.seq(e.val, what)
		if ok && len(items) == 0 {
			p.errAt(e.val, "list at least one allowed value, or remove the index", "%s: no allowed value", what)
		}
		for i, it := range items {
			// Unquoted hex such as 64 zeros resolves to a YAML integer;
			// the raw text is what counts.
			if it.Kind != yaml.ScalarNode || it.ShortTag() == "!!null" || it.ShortTag() == "!!bool" {
				p.errAt(it, "write 64 hex digits", "%s[%d]: expected a hex string, got %s", what, i, kindName(it))
				continue
			}
			s := it.Value
			b, err := hex.DecodeString(s)
			if err != nil || len(b) != sha256.Size {
				p.errAt(it, "PCR values are SHA-256 bank values: 64 hex digits, as 'tpm2_pcrread sha256' prints them without 0x", "%s: %q is not a 64-digit hex SHA-256 PCR value", what, truncate(s, 80))
				continue
			}
			pol.HostPCRs[idx] = append(pol.HostPCRs[idx], b)
		}
	}
}

func (p *parser) secrets(n *yaml.Node, pol *Policy) {
	names, nodes, _ := p.strList(n, "secrets")
	seen := map[string]bool{}
	for i, s := range names {
		if !secretRE.MatchString(s) {
			p.errAt(nodes[i], "secret names are letters, digits, '.', '_' and '-', at most 128 characters; they become /run/secrets/NAME in the guest", "secrets: %q is not a valid secret name", truncate(s, 80))
			continue
		}
		if seen[s] {
			p.errAt(nodes[i], "remove the duplicate", "secrets: %q listed twice", s)
			continue
		}
		seen[s] = true
		pol.Secrets = append(pol.Secrets, s)
	}
}

func (p *parser) rules(n *yaml.Node, pol *Policy) {
	items, ok := p.seq(n, "rules")
	if !ok {
		return
	}
	if len(items) > maxRules {
		p.errAt(n, "combine rules", "rules: more than %d rules", maxRules)
		return
	}
	seen := map[string]bool{}
	for i, it := range items {
		what := fmt.Sprintf("rules[%d]", i)
		f := p.mapping(it, what, "name", "expr", "message")
		if f == nil {
			continue
		}
		r := &Rule{}
		if v, ok := f["name"]; !ok {
			p.errAt(it, "add 'name: short-name'; it appears in deny reasons", "%s: missing name", what)
		} else if s, ok := p.str(v.val, what+".name"); ok {
			if !nameRE.MatchString(s) {
				p.errAt(v.val, "use lowercase letters, digits, '.', '_' and '-'", "%s: %q is not a valid rule name", what, truncate(s, 80))
			} else if seen[s] {
				p.errAt(v.val, "give each rule its own name", "%s: rule name %q used twice", what, s)
			}
			seen[s] = true
			r.Name = s
		}
		if v, ok := f["message"]; ok {
			r.Message, _ = p.str(v.val, what+".message")
		}
		v, ok := f["expr"]
		if !ok {
			p.errAt(it, "add 'expr: <CEL expression>' that is true for launches to allow", "%s: missing expr", what)
			continue
		}
		s, ok := p.str(v.val, what+".expr")
		if !ok {
			continue
		}
		if len(s) > maxExprLen {
			p.errAt(v.val, "simplify the expression", "%s.expr: longer than %d characters", what, maxExprLen)
			continue
		}
		r.Expr = s
		prg, errs := compileRule(s)
		for _, ce := range errs {
			line, col := p.exprPosition(v.val, ce.line, ce.col)
			p.errs = append(p.errs, &Error{File: p.file, Line: line, Column: col, Msg: fmt.Sprintf("%s.expr: CEL: %s", what, ce.msg), Hint: ce.hint})
		}
		r.prg = prg
		pol.Rules = append(pol.Rules, r)
	}
}

// exprPosition maps a 1-based line and 0-based column inside a CEL
// expression to the position in the file: exact for plain and quoted
// one-line scalars and for block scalars (| and >), whose indentation is
// read from the source; line-exact otherwise.
func (p *parser) exprPosition(n *yaml.Node, line, col int) (int, int) {
	if line < 1 {
		return n.Line, n.Column
	}
	switch n.Style {
	case yaml.LiteralStyle, yaml.FoldedStyle:
		return n.Line + line, p.blockIndent(n.Line+1) + col + 1
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		if line == 1 {
			return n.Line, n.Column + 1 + col
		}
	default:
		if line == 1 {
			return n.Line, n.Column + col
		}
	}
	return n.Line + line - 1, col + 1
}

// blockIndent is the indentation of the first non-blank source line at or
// after line (1-based): a block scalar's content indentation.
func (p *parser) blockIndent(line int) int {
	lines := bytes.Split(p.src, []byte("\n"))
	for i := line - 1; i >= 0 && i < len(lines); i++ {
		l := lines[i]
		trimmed := bytes.TrimLeft(l, " ")
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		return len(l) - len(trimmed)
	}
	return 0
}

func digestOK(d string) bool {
	_, _, err := measure.ParseDigest(d)
	return err == nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
