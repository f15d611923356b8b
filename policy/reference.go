package policy

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// defaultCmdlineParams is what a reference policy allows when no exact
// command line is given: the parameters of the launcher's own default
// command lines (kvm.DefaultCmdline, for KVM and for TCG; a test in
// internal/launchercmd keeps the two in step), each with its exact value.
// The one wildcard is tsc_early_khz, whose value is each host's TSC rate:
// the kernel reads it as a number and nothing else.
var defaultCmdlineParams = []string{"console=ttyS0", "panic=-1", "reboot=t", "quiet", "loglevel=4", "8250.nr_uarts=1", "tsc_early_khz=*", "tsc=reliable"}

// ReferenceValues are measured artifacts to write a starting policy for.
// Digests come from the artifacts themselves (package measure).
type ReferenceValues struct {
	Name        string
	Description string
	Kernel      string // digest, required
	Initrd      string // digest, "" for none
	// Cmdlines are the exact command lines allowed; when nil, a params
	// rule allowing defaultCmdlineParams is written instead.
	Cmdlines []string
	Image    string    // manifest digest, "" for none
	Signers  []*Signer // required on every artifact in addition to its digest
	Secrets  []string
	// Sources name the files the digests came from, for comments
	// (keys "kernel", "initrd", "image"); optional.
	Sources map[string]string
	Now     time.Time // for the header comment; zero leaves the date out
}

// Reference writes a policy that allows exactly the given artifacts. The
// result is parsed before it is returned, so it always passes policy check.
func Reference(rv ReferenceValues) ([]byte, error) {
	if rv.Name == "" {
		rv.Name = "default"
	}
	if !nameRE.MatchString(rv.Name) {
		return nil, fmt.Errorf("policy name %q: use lowercase letters, digits, '.', '_' and '-', at most 63 characters", rv.Name)
	}
	if rv.Kernel == "" {
		return nil, fmt.Errorf("a kernel digest is required")
	}
	var b strings.Builder
	b.WriteString("# Reference policy written by 'launcher policy init'")
	if !rv.Now.IsZero() {
		b.WriteString(" on " + rv.Now.UTC().Format(time.RFC3339))
	}
	b.WriteString(".\n# Digests were computed from the artifacts themselves. Review it, then put it\n# in attestd's policy directory (and sign it if attestd requires signed policies).\n")
	b.WriteString("apiVersion: " + APIVersion + "\n")
	b.WriteString("name: " + rv.Name + "\n")
	if rv.Description != "" {
		b.WriteString("description: " + quote(rv.Description) + "\n")
	}
	var signerNames []string
	if len(rv.Signers) > 0 {
		b.WriteString("\nsigners:\n")
		seen := map[string]bool{}
		for _, s := range rv.Signers {
			if !nameRE.MatchString(s.Name) || seen[s.Name] {
				return nil, fmt.Errorf("signer name %q is invalid or used twice", s.Name)
			}
			seen[s.Name] = true
			pemBytes, err := cryptoutils.MarshalPublicKeyToPEM(s.Key)
			if err != nil {
				return nil, fmt.Errorf("signer %s: %w", s.Name, err)
			}
			fmt.Fprintf(&b, "  %s:   # %s\n    public_key: |\n", s.Name, s.Fingerprint)
			for _, l := range strings.Split(strings.TrimSpace(string(pemBytes)), "\n") {
				b.WriteString("      " + l + "\n")
			}
			signerNames = append(signerNames, s.Name)
		}
	}
	artifact := func(what, digest string) {
		fmt.Fprintf(&b, "\n%s:\n  digests:\n    - %s", what, digest)
		if src := rv.Sources[what]; src != "" {
			b.WriteString("   # " + strings.Trim(quote(src), `"`))
		}
		b.WriteString("\n")
		if len(signerNames) > 0 {
			b.WriteString("  signers: [" + strings.Join(signerNames, ", ") + "]\n")
		}
	}
	artifact("kernel", rv.Kernel)
	if rv.Initrd != "" {
		artifact("initrd", rv.Initrd)
	}
	b.WriteString("\ncmdline:\n")
	if rv.Cmdlines != nil {
		b.WriteString("  exact:\n")
		for _, c := range rv.Cmdlines {
			b.WriteString("    - " + quote(c) + "\n")
		}
	} else {
		b.WriteString("  # No --cmdline given: the launcher's own parameters with their exact values;\n  # tsc_early_khz (under TCG) is each host's TSC rate. docs/policy.md: wildcards.\n  params:\n    allow:\n")
		for _, p := range defaultCmdlineParams {
			b.WriteString("      - " + quote(p) + "\n")
		}
		b.WriteString("    require:\n      - console=ttyS0\n")
	}
	if rv.Image != "" {
		artifact("image", rv.Image)
	}
	b.WriteString("\nargs:\n  allow: none   # only the image's own command; 'any' or 'exact: [[...]]' to allow overrides\n")
	if len(rv.Secrets) > 0 {
		b.WriteString("\nsecrets:\n")
		for _, s := range rv.Secrets {
			b.WriteString("  - " + quote(s) + "\n")
		}
	}
	out := []byte(b.String())
	if _, err := Parse(rv.Name+".yaml", out, LoadOptions{}); err != nil {
		return nil, fmt.Errorf("the reference policy does not check: %w", err)
	}
	return out, nil
}

// quote writes s as a YAML double-quoted scalar (JSON escapes are valid YAML).
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
