package attestd

import (
	"context"
	"slices"
	"strings"
	"testing"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/policy"
	"google.golang.org/grpc/codes"
)

// TestRedactReasons: a preflight answer for a caller without an admin
// certificate names each refused part of the launch once, and nothing the
// policy allows (digests, signer fingerprints, command lines).
func TestRedactReasons(t *testing.T) {
	allowed := []string{"sha256:1111", "a1b2c3d4", "console=ttyS0 panic=-1", "ro quiet", "2026-01-01", "/bin/app"}
	for _, tc := range []struct {
		name string
		j    policy.Verdict
		want []string // prefixes, in order
	}{
		{"allow", policy.Verdict{Allow: true, Policy: "p"}, nil},
		{"digest and signer", policy.Verdict{Policy: "p", Reasons: []string{
			"kernel: sha256:9999 not allowed (allowed: sha256:1111); no signature by an allowed signer (a1b2c3d4)",
			"image: manifest sha256:9999 not allowed (allowed: sha256:1111)",
		}}, []string{"kernel: ", "image: "}},
		{"command line, twice", policy.Verdict{Policy: "p", Reasons: []string{
			`cmdline: "init=/bin/sh" is not one of the allowed command lines ("console=ttyS0 panic=-1")`,
			`cmdline: parameter(s) init not allowed (allowed: ro quiet)`,
		}}, []string{"cmdline: "}},
		{"validity, args, initrd", policy.Verdict{Policy: "p", Reasons: []string{
			"validity: policy p is not valid before 2026-01-01T00:00:00Z",
			"args: command override [/bin/sh] is not one of the 1 command(s) the policy allows",
			"initrd: the launch has no initrd but the policy requires one",
		}}, []string{"validity: ", "args: ", "initrd: "}},
		{"env and network", policy.Verdict{Policy: "p", Reasons: []string{
			`env: variables "DEBUG" are not among those the policy allows (env.keys)`,
			`network: "user" is not allowed (allowed: "none")`,
		}}, []string{"env: the environment variables", "network: the guest network"}},
		{"unknown reason", policy.Verdict{Policy: "p", Reasons: []string{"host: PCR 7 is 00, expected one of sha256:1111"}}, []string{"policy: the launch is refused"}},
		{"a template not pinned", policy.Verdict{Policy: "p", Reasons: []string{"templates: template RAM sha256:9999 is not one the policy pins"}},
			[]string{"templates: the policy does not allow a clone of this VM template"}},
		{"policy not loaded", policy.Verdict{Reasons: []string{"policy \"x\" is not loaded"}}, []string{`policy: "asked" is not loaded`}},
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

// A policy that releases a secret the vault lacks is refused at Preflight,
// before anything boots, naming the secret to an admin (and telling anyone
// else to ask one); the release of an attestation that passed anyway names
// the secret too. Both used to say nothing until "release: not found",
// after a whole boot.
func TestPreflightMissingSecret(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, "sim")
	e := newEnv(t, envOptions{storeKind: "embedded", ekAllow: []string{h.nodeID}})
	h.enroll(ctx, e.client)
	req := &bulwarkv1.PreflightRequest{NodeId: h.nodeID, Policy: testPolicyName, Kernel: testKernel, Initrd: testInitrd,
		Image: testImage, ImageConfig: testConfig, Cmdline: testCmdline}

	// The attestation passes now; its release is tried below, once the
	// vault holds only one of the two secrets.
	ev := testEvent(t, testPolicyName, newGuestKey(t).PublicKey())
	h.launch(ev)
	nonce, _, err := e.client.Challenge(ctx, h.nodeID)
	if err != nil {
		t.Fatal(err)
	}
	att, err := e.client.Attest(ctx, h.attestRequest(ctx, nonce, ev.SandboxID))
	if err != nil || att.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
		t.Fatalf("attest: %v %v", att, err)
	}

	for _, step := range []struct {
		name      string
		put       string // secret put before the step
		allow     bool
		adminWant []string // each an admin's reasons must contain
		userWant  string   // what a caller without a certificate is told
	}{
		{name: "empty vault", adminWant: []string{
			`secrets: policy test releases secret "db-password", which is not in the vault: attestd ctl secret put db-password --from-file FILE`,
			`secret "api-token"`}, userWant: "secrets: the policy releases a secret that is not in attestd's vault yet: an admin must add it"},
		{name: "one missing", put: "db-password", adminWant: []string{`secret "api-token", which is not in the vault: attestd ctl secret put api-token`},
			userWant: "an admin must add it"},
	} {
		t.Run(step.name, func(t *testing.T) {
			if step.put != "" {
				if _, err := e.admin.Admin.PutSecret(ctx, &bulwarkv1.PutSecretRequest{Name: step.put, Value: []byte("v")}); err != nil {
					t.Fatal(err)
				}
			}
			ra, err := e.admin.Preflight(ctx, req)
			if err != nil || ra.GetAllow() {
				t.Fatalf("admin preflight: %v, %v; want a refusal", ra, err)
			}
			all := strings.Join(ra.GetReasons(), "\n")
			for _, w := range step.adminWant {
				if !strings.Contains(all, w) {
					t.Errorf("admin reasons lack %q:\n%s", w, all)
				}
			}
			if step.put != "" && strings.Contains(all, step.put) {
				t.Errorf("reasons name %s, which the vault holds:\n%s", step.put, all)
			}
			r, err := e.client.Preflight(ctx, req)
			if err != nil || r.GetAllow() || len(r.GetReasons()) != 1 || !strings.Contains(r.GetReasons()[0], step.userWant) {
				t.Fatalf("preflight: %v, %v; want one refusal containing %q", r, err, step.userWant)
			}
			if strings.Contains(r.GetReasons()[0], "api-token") {
				t.Errorf("a caller without a certificate sees the policy's secret names: %q", r.GetReasons())
			}
		})
	}

	t.Run("release names the missing secret", func(t *testing.T) {
		_, err := e.client.Release(ctx, att.GetAttestationId())
		wantCode(t, err, codes.NotFound, `secret "api-token" is not in attestd's vault`, "attestd ctl secret put api-token")
	})

	t.Run("all there", func(t *testing.T) {
		if _, err := e.admin.Admin.PutSecret(ctx, &bulwarkv1.PutSecretRequest{Name: "api-token", Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
		r, err := e.client.Preflight(ctx, req)
		if err != nil || !r.GetAllow() {
			t.Fatalf("preflight with every secret in the vault: %v, %v", r, err)
		}
	})
}
