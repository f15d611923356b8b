package policy

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	dA = "sha256:" + strings.Repeat("a", 64)
	dB = "sha256:" + strings.Repeat("b", 64)
	dC = "sha256:" + strings.Repeat("c", 64)
)

// minimal is a valid policy; tests append or replace lines.
var minimal = `apiVersion: bulwark.dev/v1
name: t
kernel:
  digests: [` + dA + `]
cmdline:
  exact: ["console=ttyS0"]
`

func TestParseMinimal(t *testing.T) {
	p, err := Parse("t.yaml", []byte(minimal), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "t" || len(p.Kernel.Digests) != 1 || p.Kernel.Digests[0] != dA || p.Initrd != nil || p.Image != nil {
		t.Fatalf("parsed %+v", p)
	}
	if p.Args.Any || len(p.Args.Exact) != 0 {
		t.Fatalf("args must default to no override: %+v", p.Args)
	}
	if !strings.HasPrefix(p.Digest, "sha256:") {
		t.Fatalf("digest %q", p.Digest)
	}
}

func TestParseOnRevoke(t *testing.T) {
	for _, tc := range []struct{ line, want string }{{"", OnRevokeStop}, {"on_revoke: stop\n", OnRevokeStop}, {"on_revoke: wipe-secrets\n", OnRevokeWipeSecrets}} {
		p, err := Parse("t.yaml", []byte(minimal+tc.line), LoadOptions{})
		if err != nil {
			t.Fatalf("%q: %v", tc.line, err)
		}
		if p.OnRevoke != tc.want {
			t.Errorf("%q: on_revoke %q, want %q", tc.line, p.OnRevoke, tc.want)
		}
	}
}

type wantErr struct {
	line, col int
	sub       string
}

func checkErrors(t *testing.T, err error, file string, want ...wantErr) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", want)
	}
	errs := Errors(err)
	for _, w := range want {
		found := false
		for _, e := range errs {
			if e.File == file && e.Line == w.line && e.Column == w.col && strings.Contains(e.Error(), w.sub) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no error at %s:%d:%d containing %q; got:\n%v", file, w.line, w.col, w.sub, err)
		}
	}
	for _, e := range errs {
		if e.Hint == "" && e.Line > 0 && !strings.Contains(e.Msg, "CEL") {
			t.Errorf("error without a hint: %v", e)
		}
	}
}

func TestParseErrors(t *testing.T) {
	pem := newTestKey(t).pem
	tests := []struct {
		name string
		doc  string
		want []wantErr
	}{
		{"unknown top-level field", minimal + "kernal: {}\n", []wantErr{{7, 1, `unknown field "kernal"`}, {7, 1, `did you mean "kernel"`}}},
		{"unknown nested field", strings.Replace(minimal, "cmdline:\n", "  signer: [x]\ncmdline:\n", 1), []wantErr{{5, 3, `kernel: unknown field "signer"`}}},
		{"wrong type list", strings.Replace(minimal, "digests: ["+dA+"]", "digests: "+dA, 1), []wantErr{{4, 12, "kernel.digests: expected a list, got a string"}}},
		{"wrong type string", strings.Replace(minimal, "name: t", "name: 42", 1), []wantErr{{2, 7, "name: expected a string, got an integer"}}},
		{"wrong type mapping", strings.Replace(minimal, "cmdline:\n  exact: [\"console=ttyS0\"]", "cmdline: [console=ttyS0]", 1), []wantErr{{5, 10, "cmdline: expected a mapping, got a list"}}},
		{"duplicate key", strings.Replace(minimal, "name: t\n", "name: t\nname: u\n", 1), []wantErr{{3, 1, `duplicate key "name" (first at line 2, column 1)`}}},
		{"duplicate nested key", strings.Replace(minimal, "  exact:", "  exact: [a]\n  exact:", 1), []wantErr{{7, 3, `cmdline: duplicate key "exact"`}}},
		{"malformed digest short", strings.Replace(minimal, dA, "sha256:abc", 1), []wantErr{{4, 13, `malformed digest "sha256:abc": 3 hex digits, want 64`}}},
		{"malformed digest upper", strings.Replace(minimal, dA, strings.ToUpper(dA[:8])+dA[8:], 1), []wantErr{{4, 13, "algorithm"}}},
		{"malformed digest uppercase hex", strings.Replace(minimal, dA, "sha256:"+strings.Repeat("A", 64), 1), []wantErr{{4, 13, "uppercase hex"}}},
		{"malformed digest no prefix", strings.Replace(minimal, dA, strings.Repeat("a", 64), 1), []wantErr{{4, 13, "missing the 'sha256:' prefix"}}},
		{"malformed digest md5", strings.Replace(minimal, dA, "md5:"+strings.Repeat("a", 32), 1), []wantErr{{4, 13, `algorithm "md5" is not supported`}}},
		{"bad key inline", minimal + "signers:\n  r:\n    public_key: not a key\n", []wantErr{{9, 17, "signers.r: no PEM block found"}}},
		{"bad key private", minimal + "signers:\n  r:\n    public_key: |\n      -----BEGIN EC PRIVATE KEY-----\n      AAAA\n      -----END EC PRIVATE KEY-----\n", []wantErr{{9, 17, `"EC PRIVATE KEY"`}}},
		{"bad key file missing", minimal + "signers:\n  r:\n    public_key_file: nope.pub\n", []wantErr{{9, 22, "signers.r.public_key_file: cannot read"}, {9, 22, "a relative path is relative to the policy file"}}},
		{"bad key both", minimal + "signers:\n  r:\n    public_key: |\n" + indent(pem, 6) + "\n    public_key_file: x.pub\n", []wantErr{{14, 5, "give public_key or public_key_file, not both"}}},
		{"bad key garbage body", minimal + "signers:\n  r:\n    public_key: |\n      -----BEGIN PUBLIC KEY-----\n      AAAA\n      -----END PUBLIC KEY-----\n", []wantErr{{9, 17, "unparsable public key"}}},
		{"unknown signer", strings.Replace(minimal, "digests: ["+dA+"]", "signers: [nobody]", 1), []wantErr{{4, 13, `kernel.signers: unknown signer "nobody"`}}},
		{"bad CEL syntax", minimal + "rules:\n  - name: r\n    expr: node_id.startsWith(\n", []wantErr{{9, 30, "rules[0].expr: CEL: Syntax error"}}},
		{"bad CEL undeclared", minimal + "rules:\n  - name: r\n    expr: nodeid == \"x\"\n", []wantErr{{9, 11, "undeclared reference to 'nodeid'"}}},
		{"bad CEL quoted", minimal + "rules:\n  - name: r\n    expr: 'kernel == 1'\n", []wantErr{{9, 19, "no matching overload"}}},
		{"bad CEL type", minimal + "rules:\n  - name: r\n    expr: kernel\n", []wantErr{{9, 11, "expression has type string, want bool"}}},
		{"bad CEL block", minimal + "rules:\n  - name: r\n    expr: |\n      kernel != \"\" &&\n        nosuch\n", []wantErr{{11, 9, "undeclared reference to 'nosuch'"}}},
		{"bad on_revoke", minimal + "on_revoke: kill\n", []wantErr{{7, 12, `on_revoke: "kill" is not an action`}}},
		{"on_revoke not a string", minimal + "on_revoke: [stop]\n", []wantErr{{7, 12, "on_revoke: expected a string"}}},
		{"missing CEL expr", minimal + "rules:\n  - name: r\n", []wantErr{{8, 5, "rules[0]: missing expr"}}},
		{"missing version", strings.Replace(minimal, "apiVersion: bulwark.dev/v1\n", "", 1), []wantErr{{1, 1, "missing apiVersion"}}},
		{"wrong version", strings.Replace(minimal, "bulwark.dev/v1", "bulwark.dev/v2", 1), []wantErr{{1, 13, `unsupported apiVersion "bulwark.dev/v2"`}}},
		{"missing name", strings.Replace(minimal, "name: t\n", "", 1), []wantErr{{1, 1, "missing name"}}},
		{"bad name", strings.Replace(minimal, "name: t", "name: Has Spaces", 1), []wantErr{{2, 7, "not a valid policy name"}}},
		{"missing kernel", strings.Replace(minimal, "kernel:\n  digests: ["+dA+"]\n", "", 1), []wantErr{{1, 1, "missing kernel"}}},
		{"empty kernel rule", strings.Replace(minimal, "kernel:\n  digests: ["+dA+"]\n", "kernel: {}\n", 1), []wantErr{{3, 9, "kernel: neither digests nor signers given"}}},
		{"missing cmdline", strings.Replace(minimal, "cmdline:\n  exact: [\"console=ttyS0\"]\n", "", 1), []wantErr{{1, 1, "missing cmdline"}}},
		{"bad validity window", minimal + "valid:\n  not_before: 2027-01-01T00:00:00Z\n  not_after: 2026-01-01T00:00:00Z\n", []wantErr{{9, 14, "valid: window is empty"}}},
		{"bad validity time", minimal + "valid:\n  not_after: next tuesday\n", []wantErr{{8, 14, `valid.not_after: "next tuesday" is not an RFC 3339 time`}}},
		{"bad validity date only", minimal + "valid:\n  not_after: 2026-01-01\n", []wantErr{{8, 14, "is not an RFC 3339 time"}}},
		{"empty validity", minimal + "valid: {}\n", []wantErr{{7, 8, "empty validity window"}}},
		{"cmdline both", strings.Replace(minimal, "  exact: [\"console=ttyS0\"]\n", "  exact: [\"console=ttyS0\"]\n  params: {allow: [quiet]}\n", 1), []wantErr{{7, 3, "give exact or params, not both"}}},
		{"cmdline bad pattern", strings.Replace(minimal, "  exact: [\"console=ttyS0\"]\n", "  params:\n    allow: [\"con*=x\", \"a b\"]\n", 1), []wantErr{{7, 13, "uses '*' other than"}, {7, 23, "contains whitespace"}}},
		{"cmdline pattern with a byte the kernel splits on", strings.Replace(minimal, "  exact: [\"console=ttyS0\"]\n", "  params:\n    allow: [\"a=\\xa0\", 'q=\"x\"']\n", 1), []wantErr{{7, 13, `can never match: byte 2 is "\xc2"`}, {7, 23, `can never match: byte 2 is "\""`}}},
		{"cmdline wildcard for a dangerous parameter", strings.Replace(minimal, "  exact: [\"console=ttyS0\"]\n", "  params:\n    allow: [\"kprobe_event=*\", \"init=*\", \"8250.nr_uarts=*\", \"loglevel=*\"]\n", 1), []wantErr{{7, 13, `"kprobe_event=*" names a parameter that can change what the kernel runs or prints; a wildcard may not allow it: list the exact values (kprobe_event=VALUE)`}, {7, 31, `"init=*" names a parameter`}, {7, 41, `"8250.nr_uarts=*" names a module parameter`}}},
		{"cmdline exact the kernel would split differently", strings.Replace(minimal, `["console=ttyS0"]`, `["console=ttyS0\tquiet", "a\u00a0b", "ok", "x=\"y z\""]`, 1), []wantErr{{6, 11, "cmdline.exact[0]: kernel command line byte 13 is \"\\t\": the kernel splits parameters on it"}, {6, 35, `cmdline.exact[1]: kernel command line byte 1 is "\xc2"`}, {6, 53, `cmdline.exact[3]: kernel command line byte 2 is "\""`}}},
		{"cmdline require not allowed", strings.Replace(minimal, "  exact: [\"console=ttyS0\"]\n", "  params:\n    allow: [quiet]\n    require: [console=ttyS0]\n", 1), []wantErr{{8, 14, `"console=ttyS0" is required but not allowed`}}},
		{"bad pcr index", minimal + "host:\n  pcrs:\n    24: [" + strings.Repeat("0", 64) + "]\n", []wantErr{{9, 5, `host.pcrs: "24" is not a PCR index`}}},
		{"pcr never quoted", minimal + "host:\n  pcrs:\n    10: [" + strings.Repeat("0", 64) + "]\n", []wantErr{{9, 5, `host.pcrs: PCR 10 is never quoted`}}},
		{"host cmdline empty", minimal + "host:\n  kernel_cmdline: {}\n", []wantErr{{8, 19, "host.kernel_cmdline: requires nothing"}}},
		{"host cmdline empty list", minimal + "host:\n  kernel_cmdline:\n    forbid: []\n", []wantErr{{9, 13, "host.kernel_cmdline.forbid: no pattern listed"}}},
		{"host cmdline bad pattern", minimal + "host:\n  kernel_cmdline:\n    require: [\"lockdown=*x\"]\n", []wantErr{{9, 15, `host.kernel_cmdline.require: pattern "lockdown=*x" uses '*'`}}},
		{"host cmdline required and forbidden", minimal + "host:\n  kernel_cmdline:\n    require: [init=/sbin/init]\n    forbid: [init]\n", []wantErr{{9, 5, `"init=/sbin/init" is both required and forbidden`}}},
		{"host cmdline unknown field", minimal + "host:\n  kernel_cmdline:\n    contains: [ro]\n", []wantErr{{9, 5, `host.kernel_cmdline: unknown field "contains"`}}},
		{"bad pcr value", minimal + "host:\n  pcrs:\n    7: [abcd]\n", []wantErr{{9, 9, `host.pcrs.7: "abcd" is not a 64-digit hex`}}},
		{"secure_boot enabled false", minimal + "host:\n  secure_boot:\n    enabled: false\n", []wantErr{{9, 14, "host.secure_boot.enabled: false requires nothing"}}},
		{"secure_boot enabled not a bool", minimal + "host:\n  secure_boot:\n    enabled: yes please\n", []wantErr{{9, 14, "host.secure_boot.enabled: expected true or false"}}},
		{"secure_boot empty", minimal + "host:\n  secure_boot: {}\n", []wantErr{{8, 16, "host.secure_boot: requires nothing"}}},
		{"secure_boot bad authority", minimal + "host:\n  secure_boot:\n    authorities: [abc]\n", []wantErr{{9, 19, `host.secure_boot.authorities: malformed digest "abc"`}}},
		{"secure_boot bad dbx count", minimal + "host:\n  secure_boot:\n    min_dbx_entries: -3\n", []wantErr{{9, 22, `host.secure_boot.min_dbx_entries: "-3" is not a count`}}},
		{"secure_boot unknown field", minimal + "host:\n  secure_boot:\n    enable: true\n", []wantErr{{9, 5, `host.secure_boot: unknown field "enable"`}}},
		{"bad pcr duplicate", minimal + "host:\n  pcrs:\n    7: [" + strings.Repeat("0", 64) + "]\n    7: [" + strings.Repeat("0", 64) + "]\n", []wantErr{{10, 5, `duplicate key "7"`}}},
		{"bad secret", minimal + "secrets: [\"../etc/passwd\"]\n", []wantErr{{7, 11, "not a valid secret name"}}},
		{"duplicate secret", minimal + "secrets: [a, a]\n", []wantErr{{7, 14, `"a" listed twice`}}},
		{"bad args", minimal + "args:\n  allow: some\n", []wantErr{{8, 10, `args.allow: "some" is not 'any' or 'none'`}}},
		{"args both", minimal + "args:\n  allow: any\n  exact: [[a]]\n", []wantErr{{9, 3, "give allow or exact, not both"}}},
		{"alias", strings.Replace(minimal, "cmdline:\n  exact: [\"console=ttyS0\"]\n", "cmdline: &c\n  exact: [\"console=ttyS0\"]\ninitrd: *c\n", 1), []wantErr{{5, 10, "anchors"}, {7, 9, "aliases"}}},
		{"two documents", minimal + "---\n" + minimal, []wantErr{{7, 1, "a second YAML document"}}},
		{"yaml syntax", minimal + "secrets:\n\t- x\n", []wantErr{{8, 1, "YAML syntax"}}},
		{"empty file", "", []wantErr{{0, 0, "file is empty"}}},
		{"not a mapping", "- a\n- b\n", []wantErr{{1, 1, "policy: expected a mapping, got a list"}}},
		{"duplicate rule name", minimal + "rules:\n  - {name: r, expr: 'true'}\n  - {name: r, expr: 'true'}\n", []wantErr{{9, 12, `rule name "r" used twice`}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse("t.yaml", []byte(tc.doc), LoadOptions{})
			if p != nil {
				t.Fatalf("parsed an invalid policy")
			}
			checkErrors(t, err, "t.yaml", tc.want...)
		})
	}
}

// TestParseReportsEveryError checks that one file with many problems gets
// all of them, sorted by position.
func TestParseReportsEveryError(t *testing.T) {
	doc := `apiVersion: bulwark.dev/v1
name: Bad_Name
kernel:
  digests: [sha256:1234, ` + dA + `]
  signers: [ghost]
initrd:
  digest: [` + dB + `]
cmdline:
  exact: "one line"
image:
  digests: [` + dC + `]
secrets: [ok, "no/slash"]
rules:
  - name: r1
    expr: nodeid == "x"
valid:
  not_before: 2027-01-01T00:00:00Z
  not_after: 2026-01-01T00:00:00Z
name: again
`
	_, err := Parse("multi.yaml", []byte(doc), LoadOptions{})
	want := []wantErr{
		{2, 7, "not a valid policy name"},
		{4, 13, "malformed digest"},
		{5, 13, "unknown signer"},
		{7, 3, `unknown field "digest"`},
		{9, 10, "cmdline.exact: expected a list"},
		{12, 15, "not a valid secret name"},
		{15, 11, "undeclared reference"},
		{18, 14, "window is empty"},
		{19, 1, `duplicate key "name"`},
	}
	checkErrors(t, err, "multi.yaml", want...)
	errs := Errors(err)
	if len(errs) != len(want) {
		t.Errorf("got %d errors, want %d:\n%v", len(errs), len(want), err)
	}
	for i := 1; i < len(errs); i++ {
		if errs[i-1].Line > errs[i].Line {
			t.Errorf("errors not sorted by line: %v", err)
		}
	}
	if !strings.HasPrefix(err.Error(), fmt.Sprintf("%d errors:\nmulti.yaml:2:7: ", len(errs))) {
		t.Errorf("error text:\n%v", err)
	}
}

func TestLoadDirReportsAllFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.yaml"), []byte(minimal))
	writeFile(t, filepath.Join(dir, "b.yaml"), []byte(minimal))                                          // duplicate name t
	writeFile(t, filepath.Join(dir, "c.yml"), []byte(strings.Replace(minimal, "name: t", "name: 7", 1))) // wrong type
	writeFile(t, filepath.Join(dir, ".hidden.yaml"), []byte("garbage: ["))
	writeFile(t, filepath.Join(dir, "README.md"), []byte("not a policy"))
	_, err := LoadDir(dir, LoadOptions{})
	errs := Errors(err)
	if len(errs) != 2 {
		t.Fatalf("want 2 errors, got %d:\n%v", len(errs), err)
	}
	checkErrors(t, err, filepath.Join(dir, "b.yaml"), wantErr{1, 1, `policy name "t" is also used by ` + filepath.Join(dir, "a.yaml")})
	checkErrors(t, err, filepath.Join(dir, "c.yml"), wantErr{2, 7, "expected a string"})
}

func TestKeyFileRelative(t *testing.T) {
	dir := t.TempDir()
	k := newTestKey(t)
	writeFile(t, filepath.Join(dir, "keys", "r.pub"), []byte(k.pem))
	doc := minimal + "signers:\n  r:\n    public_key_file: keys/r.pub\n"
	writeFile(t, filepath.Join(dir, "p.yaml"), []byte(doc))
	p, err := ParseFile(filepath.Join(dir, "p.yaml"), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Signers["r"].Fingerprint, k.fingerprint(t); got != want {
		t.Fatalf("fingerprint %s, want %s", got, want)
	}
}

func TestMatchParam(t *testing.T) {
	tests := []struct {
		pat, tok string
		want     bool
	}{
		{"quiet", "quiet", true},
		{"quiet", "quiet=1", false},
		{"panic=*", "panic=-1", true},
		{"panic=*", "panic=", true},
		{"panic=*", "panic", false},
		{"panic=*", "panicky=1", false},
		{"console=ttyS0", "console=ttyS0", true},
		{"console=ttyS0", "console=ttyS1", false},
		{"init=*", `"init=/bin/sh"`, false},
		{"init=*", "init=/bin/sh", false},
		{"kprobe_event=*", "kprobe_event=p:vfs_write", false},
		{"8250.nr_uarts=*", "8250.nr_uarts=4", false},
		{"8250.nr_uarts=1", "8250.nr_uarts=1", true},
	}
	for _, tc := range tests {
		if got := matchParam(tc.pat, tc.tok); got != tc.want {
			t.Errorf("matchParam(%q, %q) = %v", tc.pat, tc.tok, got)
		}
	}
}

func TestWarnings(t *testing.T) {
	k := newTestKey(t)
	doc := `apiVersion: bulwark.dev/v1
name: w
valid: {not_after: 2020-01-01T00:00:00Z}
signers:
  unused: {public_key: "` + strings.ReplaceAll(k.pem, "\n", `\n`) + `"}
kernel: {digests: []}
cmdline: {exact: []}
image: {signers: []}
`
	p, err := Parse("w.yaml", []byte(doc), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(p.Warnings(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), "\n")
	for _, want := range []string{"kernel.digests is empty", "image.signers is empty", "cmdline.exact is empty", "validity window ended at 2020-01-01T00:00:00Z", "signer unused is defined but"} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings lack %q:\n%s", want, got)
		}
	}
	m, _ := Parse("m.yaml", []byte(minimal), LoadOptions{})
	if w := m.Warnings(time.Now()); len(w) != 0 {
		t.Errorf("warnings for a sound policy: %q", w)
	}
}
