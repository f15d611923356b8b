package attestd

import (
	"slices"
	"strings"
	"testing"
)

// TestRedactReasons: a preflight answer for a caller without an admin
// certificate names each refused part of the launch once, and nothing the
// policy allows (digests, signer fingerprints, command lines).
func TestRedactReasons(t *testing.T) {
	allowed := []string{"sha256:1111", "a1b2c3d4", "console=ttyS0 panic=-1", "ro quiet", "2026-01-01", "/bin/app"}
	for _, tc := range []struct {
		name string
		j    Judgement
		want []string // prefixes, in order
	}{
		{"allow", Judgement{Allow: true, Policy: "p"}, nil},
		{"digest and signer", Judgement{Policy: "p", Reasons: []string{
			"kernel: sha256:9999 not allowed (allowed: sha256:1111); no signature by an allowed signer (a1b2c3d4)",
			"image: manifest sha256:9999 not allowed (allowed: sha256:1111)",
		}}, []string{"kernel: ", "image: "}},
		{"command line, twice", Judgement{Policy: "p", Reasons: []string{
			`cmdline: "init=/bin/sh" is not one of the allowed command lines ("console=ttyS0 panic=-1")`,
			`cmdline: parameter(s) init not allowed (allowed: ro quiet)`,
		}}, []string{"cmdline: "}},
		{"validity, args, initrd", Judgement{Policy: "p", Reasons: []string{
			"validity: policy p is not valid before 2026-01-01T00:00:00Z",
			"args: command override [/bin/sh] is not one of the 1 command(s) the policy allows",
			"initrd: the launch has no initrd but the policy requires one",
		}}, []string{"validity: ", "args: ", "initrd: "}},
		{"unknown reason", Judgement{Policy: "p", Reasons: []string{"host: PCR 7 is 00, expected one of sha256:1111"}}, []string{"policy: the launch is refused"}},
		{"policy not loaded", Judgement{Reasons: []string{"policy \"x\" is not loaded"}}, []string{`policy: "asked" is not loaded`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := redactReasons(tc.j, "asked")
			if len(got) != len(tc.want) {
				t.Fatalf("%q, want %d reasons starting %q", got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(got[i], w) {
					t.Errorf("reason %d: %q, want it to start %q", i, got[i], w)
				}
			}
			all := strings.Join(got, "\n")
			if i := slices.IndexFunc(allowed, func(a string) bool { return strings.Contains(all, a) }); i >= 0 {
				t.Errorf("%q shows %q, which the policy allows", got, allowed[i])
			}
		})
	}
}
