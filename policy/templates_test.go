package policy

import (
	"context"
	"strings"
	"testing"
)

// TestTemplatesRule: a clone passes a policy without a templates section
// (judged like a cold boot), is refused by 'allow: false', and passes a
// pinned policy only with a pinned recipe and RAM; a cold boot passes all.
// CEL sees the clone's template digests.
func TestTemplatesRule(t *testing.T) {
	f := newEvalFixture(t)
	recipe, ram, state := digestOf([]byte("recipe")), digestOf([]byte("ram")), digestOf([]byte("state"))
	clone := func(ev *Evidence) {
		ev.Event.TemplateRecipe, ev.Event.TemplateRAM, ev.Event.TemplateState = recipe, ram, state
	}
	parse := func(section string) *Policy {
		t.Helper()
		p, err := Parse("t.yaml", []byte(minimal+section), LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := f.evidence(t)
	for _, tc := range []struct {
		name    string
		section string
		clone   bool
		want    string // "" allowed
	}{
		{"no section, clone", "", true, ""},
		{"forbidden, cold", "templates: {allow: false}\n", false, ""},
		{"forbidden, clone", "templates: {allow: false}\n", true, "allows cold boots only"},
		{"pinned, pinned clone", "templates: {recipes: [" + recipe + "], ram: [" + ram + "]}\n", true, ""},
		{"pinned recipe, other", "templates: {recipes: [" + digestOf([]byte("x")) + "]}\n", true, "template recipe " + recipe + " is not one the policy pins"},
		{"pinned ram, other", "templates: {ram: [" + digestOf([]byte("x")) + "]}\n", true, "template RAM " + ram + " is not one the policy pins"},
		{"pinned, cold", "templates: {ram: [" + digestOf([]byte("x")) + "]}\n", false, ""},
		{"CEL sees the template", "rules:\n  - name: clones-only\n    expr: template.ram == \"" + ram + "\" && template.recipe != \"\" && template.state != \"\" && image_disk == \"\"\n", true, ""},
		{"CEL cold", "rules:\n  - name: clones-only\n    expr: template.ram != \"\"\n", false, "rule clones-only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := parse(tc.section)
			ev := base
			ev.Signatures, ev.HostPCRs = nil, nil
			// What the minimal policy allows: its kernel and command line.
			ev.Event.Policy, ev.Event.Kernel, ev.Event.Initrd, ev.Event.Image, ev.Event.ImageConfig = p.Name, dA, "", "", ""
			ev.Event.Cmdline, ev.Event.CmdlineDigest = "console=ttyS0", digestOf([]byte("console=ttyS0"))
			if tc.clone {
				clone(&ev)
			}
			v := p.Evaluate(context.Background(), ev)
			got := strings.Join(v.Reasons, "; ")
			if tc.want == "" && !v.Allow {
				t.Fatalf("denied: %s", got)
			}
			if tc.want != "" && (v.Allow || !strings.Contains(got, tc.want)) {
				t.Fatalf("got allow=%v %q, want %q", v.Allow, got, tc.want)
			}
		})
	}
}

func TestTemplatesRuleParseErrors(t *testing.T) {
	for _, tc := range []struct{ section, want string }{
		{"templates: {allow: maybe}\n", "templates.allow: expected true or false"},
		{"templates: {ram: [sha256:00]}\n", "templates.ram: malformed digest"},
		{"templates: {allow: false, ram: [" + digestOf([]byte("x")) + "]}\n", "no clone could pass"},
		{"templates: {pin: []}\n", "pin"},
	} {
		_, err := Parse("t.yaml", []byte(minimal+tc.section), LoadOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.section, err, tc.want)
		}
	}
}
