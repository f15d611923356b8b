package policy

import (
	"slices"

	"go.yaml.in/yaml/v3"
)

// TemplateRule says whether a launch may be a clone of a VM template and,
// optionally, of which (docs/templates.md). A clone's event names the
// template's recipe, RAM and device-state digests; its kernel, initrd and
// command line are judged exactly as a cold boot's.
type TemplateRule struct {
	// Forbid refuses every clone: only cold boots pass.
	Forbid bool
	// Recipes and RAM, when not empty, pin the templates clones may come
	// from: the recipe digest, the RAM digest (launcher template inspect).
	Recipes, RAM []string
}

// templates parses the top-level templates section.
func (p *parser) templates(n *yaml.Node, pol *Policy) {
	f := p.mapping(n, "templates", "allow", "recipes", "ram")
	if f == nil {
		return
	}
	r := &TemplateRule{}
	if v, ok := f["allow"]; ok {
		if v.val.Kind != yaml.ScalarNode || v.val.ShortTag() != "!!bool" {
			p.errAt(v.val, "write 'allow: false' to refuse clones, or remove it (clones are allowed by default)", "templates.allow: expected true or false, got %s", kindName(v.val))
		} else {
			r.Forbid = v.val.Value == "false"
		}
	}
	if v, ok := f["recipes"]; ok {
		r.Recipes = p.digestList(v.val, "templates.recipes")
	}
	if v, ok := f["ram"]; ok {
		r.RAM = p.digestList(v.val, "templates.ram")
	}
	if r.Forbid && (len(r.Recipes) > 0 || len(r.RAM) > 0) {
		p.errAt(n, "drop recipes/ram, or allow clones", "templates: allow: false with pinned templates: no clone could pass")
	}
	pol.Templates = r
}

// templates judges a clone against the policy's template rule.
func (e *evaluation) templates() {
	ev := e.ev.Event
	if !ev.Cloned() {
		return
	}
	r := e.pol.Templates
	if r == nil {
		return
	}
	if r.Forbid {
		e.deny("templates: this launch is a clone of a VM template and the policy allows cold boots only (launcher run --template none)")
		return
	}
	if len(r.Recipes) > 0 && !slices.Contains(r.Recipes, ev.TemplateRecipe) {
		e.deny("templates: template recipe %s is not one the policy pins", ev.TemplateRecipe)
	}
	if len(r.RAM) > 0 && !slices.Contains(r.RAM, ev.TemplateRAM) {
		e.deny("templates: template RAM %s is not one the policy pins", ev.TemplateRAM)
	}
}

// templateClaims is the CEL variable template: the digests a clone
// resumed from, all "" for a cold boot.
func (e *evaluation) templateClaims() map[string]any {
	ev := e.ev.Event
	return map[string]any{"recipe": ev.TemplateRecipe, "ram": ev.TemplateRAM, "state": ev.TemplateState}
}
