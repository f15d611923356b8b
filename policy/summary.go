package policy

import (
	"fmt"
	"strings"
	"time"
)

// Summary describes the policy in one line for 'policy check' and the
// admin API, e.g. "web: kernel 2 digests + signers release; cmdline 5 params; ...".
func (p *Policy) Summary() string {
	parts := []string{}
	art := func(what string, r *ArtifactRule) {
		if r == nil {
			parts = append(parts, "no "+what)
			return
		}
		var s []string
		if r.HasDigests {
			s = append(s, plural(len(r.Digests), "digest"))
		}
		if r.HasSigners {
			names := make([]string, len(r.Signers))
			for i, k := range r.Signers {
				names[i] = k.Name
			}
			if len(names) == 0 {
				s = append(s, "no signer")
			} else {
				s = append(s, "signed by "+strings.Join(names, "|"))
			}
		}
		parts = append(parts, what+" "+strings.Join(s, " + "))
	}
	art("kernel", p.Kernel)
	art("initrd", p.Initrd)
	if p.Cmdline != nil {
		if p.Cmdline.Params != nil {
			parts = append(parts, fmt.Sprintf("cmdline %s allowed", plural(len(p.Cmdline.Params.Allow), "param")))
		} else {
			parts = append(parts, fmt.Sprintf("cmdline %s", plural(len(p.Cmdline.Exact), "exact value")))
		}
	}
	art("image", p.Image)
	switch {
	case p.Args.Any:
		parts = append(parts, "any command override")
	case len(p.Args.Exact) > 0:
		parts = append(parts, plural(len(p.Args.Exact), "allowed command override"))
	default:
		parts = append(parts, "no command override")
	}
	switch {
	case p.Env.Any:
		parts = append(parts, "any environment variables")
	case len(p.Env.Keys) > 0:
		parts = append(parts, plural(len(p.Env.Keys), "allowed environment variable"))
	}
	if p.Network != nil {
		parts = append(parts, "network "+strings.Join(p.Network.Allow, "/"))
	}
	if len(p.HostPCRs) > 0 {
		parts = append(parts, plural(len(p.HostPCRs), "host PCR"))
	}
	parts = append(parts, plural(len(p.Secrets), "secret"))
	if len(p.Rules) > 0 {
		parts = append(parts, plural(len(p.Rules), "CEL rule"))
	}
	if !p.NotBefore.IsZero() || !p.NotAfter.IsZero() {
		w := "valid"
		if !p.NotBefore.IsZero() {
			w += " from " + p.NotBefore.UTC().Format(time.RFC3339)
		}
		if !p.NotAfter.IsZero() {
			w += " until " + p.NotAfter.UTC().Format(time.RFC3339)
		}
		parts = append(parts, w)
	}
	if p.Signed {
		parts = append(parts, "signature verified")
	}
	return p.Name + ": " + strings.Join(parts, "; ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// Warnings lists what is valid but probably not meant: rules that can
// never allow anything, a validity window that has ended or not begun at
// now, signers no rule uses. 'policy check' prints them without failing.
func (p *Policy) Warnings(now time.Time) []string {
	var w []string
	used := map[string]bool{}
	for _, a := range []struct {
		what string
		r    *ArtifactRule
	}{{"kernel", p.Kernel}, {"initrd", p.Initrd}, {"image", p.Image}} {
		if a.r == nil {
			continue
		}
		if a.r.HasDigests && len(a.r.Digests) == 0 {
			w = append(w, a.what+".digests is empty: this policy allows no "+a.what)
		}
		if a.r.HasSigners && len(a.r.Signers) == 0 {
			w = append(w, a.what+".signers is empty: this policy accepts no "+a.what+" signature")
		}
		for _, s := range a.r.Signers {
			used[s.Name] = true
		}
	}
	if p.Cmdline != nil && p.Cmdline.Params == nil && len(p.Cmdline.Exact) == 0 {
		w = append(w, "cmdline.exact is empty: this policy allows no command line")
	}
	if p.Cmdline != nil && p.Cmdline.Params != nil && len(p.Cmdline.Params.Allow) == 0 {
		w = append(w, "cmdline.params.allow is empty: only an empty command line is allowed")
	}
	if !p.NotAfter.IsZero() && now.After(p.NotAfter) {
		w = append(w, "the validity window ended at "+p.NotAfter.UTC().Format(time.RFC3339)+": this policy allows nothing now")
	}
	if !p.NotBefore.IsZero() && now.Before(p.NotBefore) {
		w = append(w, "the validity window starts at "+p.NotBefore.UTC().Format(time.RFC3339)+": this policy allows nothing yet")
	}
	for _, n := range sortedKeys(p.Signers) {
		if !used[n] && !strings.Contains(rulesText(p), `"`+n+`"`) {
			w = append(w, "signer "+n+" is defined but no kernel, initrd or image rule (nor CEL rule) names it")
		}
	}
	return w
}

func rulesText(p *Policy) string {
	var b strings.Builder
	for _, r := range p.Rules {
		b.WriteString(r.Expr)
	}
	return b.String()
}
