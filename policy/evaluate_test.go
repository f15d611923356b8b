package policy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/measure"
)

// evalFixture is a policy with real keys and matching artifacts.
type evalFixture struct {
	release, ops, stranger *testKey
	kernel, initrd         []byte
	image, imageConfig     string
	pcr7                   []byte
	set                    *Set
}

const fixtureCmdline = "console=ttyS0 panic=-1 quiet"

func newEvalFixture(t testing.TB) *evalFixture {
	t.Helper()
	f := &evalFixture{release: newTestKey(t), ops: newTestKey(t), stranger: newTestKey(t)}
	f.kernel = make([]byte, 4096)
	f.initrd = make([]byte, 2048)
	rand.Read(f.kernel)
	rand.Read(f.initrd)
	f.image = digestOf([]byte("manifest"))
	f.imageConfig = digestOf([]byte("config"))
	f.pcr7 = make([]byte, 32)
	rand.Read(f.pcr7)
	doc := `apiVersion: bulwark.dev/v1
name: web
valid:
  not_before: 2026-01-01T00:00:00Z
  not_after: 2027-01-01T00:00:00Z
signers:
  release:
    public_key: |
` + indent(f.release.pem, 6) + `
  ops:
    public_key: |
` + indent(f.ops.pem, 6) + `
kernel:
  digests: [` + digestOf(f.kernel) + `]
  signers: [release]
initrd:
  digests: [` + digestOf(f.initrd) + `]
cmdline:
  params:
    allow: [console=ttyS0, "panic=*", quiet]
    require: [console=ttyS0]
image:
  signers: [release, ops]
host:
  pcrs:
    7: [` + hex.EncodeToString(f.pcr7) + `, ` + strings.Repeat("0", 64) + `]
secrets: [db-password, tls.key]
rules:
  - name: prod-only
    expr: node_id.startsWith("prod-")
    message: web runs only on prod nodes
  - name: pcr0-known
    expr: host_pcrs[0] != ""
  - name: release-signed-kernel
    expr: '"release" in signers["kernel"] && time > timestamp("2025-01-01T00:00:00Z")'
`
	p, err := Parse("web.yaml", []byte(doc), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := Parse("bare.yaml", []byte(minimal), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.set, err = NewSet(p, other)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// evidence is a launch the fixture policy allows.
func (f *evalFixture) evidence(t testing.TB) Evidence {
	ev := measure.LaunchEvent{
		SandboxID:     "0123456789abcdef0123456789abcdef",
		Policy:        "web",
		Kernel:        digestOf(f.kernel),
		Initrd:        digestOf(f.initrd),
		Cmdline:       fixtureCmdline,
		CmdlineDigest: digestOf([]byte(fixtureCmdline)),
		Image:         f.image,
		ImageConfig:   f.imageConfig,
		Time:          time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC),
	}
	payload := cosignPayload("registry.example/web", f.image)
	return Evidence{
		NodeID: "prod-17",
		Event:  ev,
		Signatures: []ArtifactSignature{
			{Artifact: "kernel", Signature: f.release.signBlob(t, f.kernel)},
			{Artifact: "image", Signature: f.ops.signBlob(t, payload), Payload: payload},
		},
		HostPCRs: map[int][]byte{0: make([]byte, 32), 7: f.pcr7},
		Time:     time.Date(2026, 6, 1, 12, 0, 1, 0, time.UTC),
	}
}

func TestEvaluate(t *testing.T) {
	f := newEvalFixture(t)
	tests := []struct {
		name   string
		mutate func(ev *Evidence)
		want   []string // substrings, one per expected reason, in order
	}{
		{"allow", func(ev *Evidence) {}, nil},
		{"allow with release-signed image too", func(ev *Evidence) {
			p := cosignPayload("x", f.image)
			ev.Signatures = append(ev.Signatures, ArtifactSignature{Artifact: "image", Signature: f.release.signBlob(t, p), Payload: p})
		}, nil},
		{"unknown policy", func(ev *Evidence) { ev.Event.Policy = "nope" }, []string{`policy "nope" is not loaded on this attestation service`}},
		{"no policy named", func(ev *Evidence) { ev.Event.Policy = "" }, []string{"the launch names no policy"}},
		{"kernel digest mismatch", func(ev *Evidence) {
			other := []byte("another kernel")
			ev.Event.Kernel = digestOf(other)
			ev.Signatures[0].Signature = f.release.signBlob(t, other)
		}, []string{"kernel: " + digestOf([]byte("another kernel")) + " not allowed (allowed: " + digestOf(f.kernel) + ")"}},
		{"kernel wrong signer named", func(ev *Evidence) {
			ev.Signatures[0] = ArtifactSignature{Artifact: "kernel", Signature: f.stranger.signBlob(t, f.kernel), PublicKey: []byte(f.stranger.pem)}
		}, []string{"kernel: " + digestOf(f.kernel) + ": signed by key " + short(f.stranger.fingerprint(t)) + " which is not a signer of this policy; none of 1 signature(s) verifies with an allowed kernel signer (release (" + short(f.release.fingerprint(t)) + "))", "rule release-signed-kernel"}},
		{"kernel wrong signer unnamed", func(ev *Evidence) {
			ev.Signatures[0] = ArtifactSignature{Artifact: "kernel", Signature: f.stranger.signBlob(t, f.kernel)}
		}, []string{"kernel: " + digestOf(f.kernel) + ": none of 1 signature(s) verifies with an allowed kernel signer (release", "rule release-signed-kernel"}},
		{"kernel signed by a signer of another artifact", func(ev *Evidence) {
			ev.Signatures[0] = ArtifactSignature{Artifact: "kernel", Signature: f.ops.signBlob(t, f.kernel)}
		}, []string{"signed by ops (" + short(f.ops.fingerprint(t)) + ") which is not an allowed kernel signer; none of 1 signature(s) verifies", "rule release-signed-kernel"}},
		{"kernel no signature", func(ev *Evidence) { ev.Signatures = ev.Signatures[1:] }, []string{"kernel: " + digestOf(f.kernel) + ": no signature was sent; a signature by release (", "rule release-signed-kernel"}},
		{"kernel signature over other bytes", func(ev *Evidence) {
			ev.Signatures[0].Signature = f.release.signBlob(t, []byte("other"))
		}, []string{"none of 1 signature(s) verifies", "rule release-signed-kernel"}},
		{"kernel garbage signature", func(ev *Evidence) { ev.Signatures[0].Signature = []byte{0x30, 0x01} }, []string{"none of 1 signature(s) verifies", "rule release-signed-kernel"}},
		{"kernel malformed digest", func(ev *Evidence) { ev.Event.Kernel = "sha256:xyz" }, []string{`kernel: launch event digest "sha256:xyz" is malformed`, "rule release-signed-kernel"}},
		{"kernel missing", func(ev *Evidence) { ev.Event.Kernel = "" }, []string{"kernel: the launch event has no kernel digest", "rule release-signed-kernel"}},
		{"initrd mismatch", func(ev *Evidence) { ev.Event.Initrd = dB }, []string{"initrd: " + dB + " not allowed"}},
		{"initrd missing", func(ev *Evidence) { ev.Event.Initrd = "" }, []string{"initrd: the launch has no initrd but the policy requires one"}},
		{"cmdline param not allowed", func(ev *Evidence) { ev.Event.Cmdline = "console=ttyS0 init=/bin/sh quiet" }, []string{`cmdline: parameter(s) "init=/bin/sh" not allowed`}},
		{"cmdline quoted smuggle", func(ev *Evidence) { ev.Event.Cmdline = `console=ttyS0 "init=/bin/sh"` }, []string{`cmdline: "console=ttyS0 \"init=/bin/sh\"" refused: kernel command line byte 14 is "\"": quotes change how the kernel splits`}},
		{"cmdline no-break space smuggles a parameter", func(ev *Evidence) { ev.Event.Cmdline = "console=ttyS0 panic=-1\u00a0kprobe_event=p:vfs_write" }, []string{`cmdline: "console=ttyS0 panic=-1\u00a0kprobe_event=p:vfs_write" refused: kernel command line byte 22 is "\xc2"`}},
		{"cmdline tab smuggles a parameter", func(ev *Evidence) { ev.Event.Cmdline = "console=ttyS0 panic=-1\tinit=/bin/sh" }, []string{`refused: kernel command line byte 22 is "\t": the kernel splits parameters on it`}},
		{"cmdline digest mismatch", func(ev *Evidence) { ev.Event.CmdlineDigest = dA }, []string{"cmdline: cmdline_digest " + dA + " is not the digest of the command line"}},
		{"cmdline required missing", func(ev *Evidence) { ev.Event.Cmdline = "quiet" }, []string{`cmdline: required parameter "console=ttyS0" is missing from "quiet"`}},
		{"image tampered payload", func(ev *Evidence) {
			ev.Signatures[1].Payload = []byte(strings.Replace(string(ev.Signatures[1].Payload), "registry.example", "evil.example", 1))
		}, []string{"image: manifest " + f.image + ": none of 1 signature(s) verifies with an allowed image signer (release ("}},
		{"image payload for another digest", func(ev *Evidence) {
			p := cosignPayload("registry.example/web", dC)
			ev.Signatures[1] = ArtifactSignature{Artifact: "image", Signature: f.ops.signBlob(t, p), Payload: p}
		}, []string{"image: manifest " + f.image + ": signature by ops is for manifest " + dC + ", not " + f.image}},
		{"image payload wrong type", func(ev *Evidence) {
			p := []byte(strings.Replace(string(cosignPayload("r", f.image)), "cosign container image signature", "something else", 1))
			ev.Signatures[1] = ArtifactSignature{Artifact: "image", Signature: f.ops.signBlob(t, p), Payload: p}
		}, []string{`signature by ops has an unusable payload: signature payload is not a cosign container image signature: critical.type is "something else"`}},
		// attestd parses the payload as strictly as the launcher does.
		{"image payload unknown critical field", func(ev *Evidence) {
			p := []byte(strings.Replace(string(cosignPayload("r", f.image)), `"type":`, `"extra":"x","type":`, 1))
			ev.Signatures[1] = ArtifactSignature{Artifact: "image", Signature: f.ops.signBlob(t, p), Payload: p}
		}, []string{`signature by ops has an unusable payload: signature payload is not a cosign container image signature: critical: `}},
		{"image payload without docker-reference", func(ev *Evidence) {
			p := []byte(strings.Replace(string(cosignPayload("r", f.image)), `"identity":{"docker-reference":"r"},`, ``, 1))
			ev.Signatures[1] = ArtifactSignature{Artifact: "image", Signature: f.ops.signBlob(t, p), Payload: p}
		}, []string{`critical.identity.docker-reference is missing`}},
		{"image no payload", func(ev *Evidence) { ev.Signatures[1].Payload = nil }, []string{"an image signature came without its payload"}},
		{"image signed by stranger", func(ev *Evidence) {
			p := cosignPayload("r", f.image)
			ev.Signatures[1] = ArtifactSignature{Artifact: "image", Signature: f.stranger.signBlob(t, p), Payload: p, PublicKey: []byte(f.stranger.pem)}
		}, []string{"image: manifest " + f.image + ": signed by key " + short(f.stranger.fingerprint(t)) + " which is not a signer of this policy"}},
		{"image absent is fine", func(ev *Evidence) {
			ev.Event.Image, ev.Event.ImageConfig = "", ""
		}, []string{"image: the launch has no image but the policy requires one"}},
		{"args override not allowed", func(ev *Evidence) { ev.Event.Args = []string{"/bin/sh"} }, []string{`args: command override ["/bin/sh"] not allowed`}},
		{"before validity", func(ev *Evidence) { ev.Time = time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC) }, []string{"validity: policy web is not valid before 2026-01-01T00:00:00Z; it is 2025-12-31T00:00:00Z"}},
		{"after validity", func(ev *Evidence) { ev.Time = time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC) }, []string{"validity: policy web expired at 2027-01-01T00:00:00Z; it is 2027-01-02T00:00:00Z"}},
		{"no time", func(ev *Evidence) { ev.Time = time.Time{} }, []string{"validity: the policy has a validity window but the evidence carries no time", "rule release-signed-kernel: "}},
		{"host PCR mismatch", func(ev *Evidence) { ev.HostPCRs[7] = make([]byte, 32); ev.HostPCRs[7][0] = 1 }, []string{"host: PCR 7 is 01000000"}},
		{"host PCR not quoted", func(ev *Evidence) { delete(ev.HostPCRs, 7) }, []string{"host: PCR 7 was not quoted; the policy requires one of " + hex.EncodeToString(f.pcr7)}},
		{"CEL false with message", func(ev *Evidence) { ev.NodeID = "dev-1" }, []string{"rule prod-only: web runs only on prod nodes"}},
		{"CEL false without message", func(ev *Evidence) { ev.Signatures[0].Signature = nil }, []string{"kernel:", `rule release-signed-kernel: "release" in signers["kernel"] && time > timestamp("2025-01-01T00:00:00Z") is false`}},
		{"CEL error", func(ev *Evidence) { delete(ev.HostPCRs, 0) }, []string{"rule pcr0-known: evaluation failed (denied): no such key: 0"}},
		{"every reason at once", func(ev *Evidence) {
			ev.Event.Kernel = dA
			ev.Event.Initrd = dB
			ev.Event.Cmdline = "rw"
			ev.Event.Args = []string{"x"}
			ev.Signatures = nil
			ev.HostPCRs = nil
			ev.NodeID = "x"
			ev.Time = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		}, []string{"validity:", "kernel: " + dA + " not allowed", "initrd:", `cmdline: parameter(s) "rw"`, "cmdline: required", "image: manifest", "args:", "host: PCR 7", "rule prod-only", "rule pcr0-known", "rule release-signed-kernel"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := f.evidence(t)
			orig := ev.Event.CmdlineDigest
			tc.mutate(&ev)
			if ev.Event.CmdlineDigest == orig { // keep the event consistent unless the case is about that
				ev.Event.CmdlineDigest = digestOf([]byte(ev.Event.Cmdline))
			}
			v := f.set.Evaluate(context.Background(), ev)
			if len(tc.want) == 0 {
				if !v.Allow || len(v.Reasons) != 0 {
					t.Fatalf("denied: %q", v.Reasons)
				}
				if strings.Join(v.Secrets, ",") != "db-password,tls.key" || v.Policy != "web" || v.PolicyDigest == "" {
					t.Fatalf("verdict %+v", v)
				}
				return
			}
			if v.Allow || len(v.Secrets) != 0 {
				t.Fatalf("allowed (secrets %v), want deny %q", v.Secrets, tc.want)
			}
			if len(v.Reasons) != len(tc.want) {
				t.Fatalf("got %d reasons, want %d:\n%s", len(v.Reasons), len(tc.want), strings.Join(v.Reasons, "\n"))
			}
			for i, w := range tc.want {
				if !strings.Contains(v.Reasons[i], w) {
					t.Errorf("reason %d = %q\nwant it to contain %q", i, v.Reasons[i], w)
				}
			}
		})
	}
}

func TestEvaluateArtifactRules(t *testing.T) {
	k := newTestKey(t)
	kernel := []byte("kernel bytes")
	base := func(extra string) *Set {
		doc := `apiVersion: bulwark.dev/v1
name: p
signers:
  k:
    public_key: |
` + indent(k.pem, 6) + `
cmdline:
  exact: ["console=ttyS0"]
` + extra
		p, err := Parse("p.yaml", []byte(doc), LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewSet(p)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ev := func() Evidence {
		return Evidence{Event: measure.LaunchEvent{Policy: "p", Kernel: digestOf(kernel), Cmdline: "console=ttyS0"}, Time: time.Now(),
			Signatures: []ArtifactSignature{{Artifact: "kernel", Signature: k.signBlob(t, kernel)}}}
	}
	tests := []struct {
		name   string
		policy string
		mutate func(*Evidence)
		want   string // "" = allow
	}{
		{"signer only", "kernel: {signers: [k]}\n", nil, ""},
		{"digest only", "kernel: {digests: [" + digestOf(kernel) + "]}\n", func(e *Evidence) { e.Signatures = nil }, ""},
		{"empty digests allows nothing", "kernel: {digests: []}\n", nil, "digests list is empty, so it allows none"},
		{"empty signers allows nothing", "kernel: {signers: []}\n", nil, "signers list is empty, so no signature is accepted"},
		{"both: digest ok, signature missing", "kernel: {digests: [" + digestOf(kernel) + "], signers: [k]}\n", func(e *Evidence) { e.Signatures = nil }, "no signature was sent"},
		{"both: signature ok, digest not listed", "kernel: {digests: [" + dA + "], signers: [k]}\n", nil, "not allowed (allowed: " + dA + ")"},
		{"no initrd rule rejects an initrd", "kernel: {signers: [k]}\n", func(e *Evidence) { e.Event.Initrd = dB }, "initrd: " + dB + " given, but the policy allows no initrd (it has no initrd section)"},
		{"no image rule rejects an image", "kernel: {signers: [k]}\n", func(e *Evidence) { e.Event.Image = dB }, "image: manifest " + dB + " given, but the policy allows no image"},
		{"exact cmdline mismatch", "kernel: {signers: [k]}\n", func(e *Evidence) { e.Event.Cmdline = "console=ttyS0 single" }, `cmdline: "console=ttyS0 single" is not one of the allowed command lines ("console=ttyS0")`},
		{"args any", "kernel: {signers: [k]}\nargs: {allow: any}\n", func(e *Evidence) { e.Event.Args = []string{"sh"} }, ""},
		{"args exact ok", "kernel: {signers: [k]}\nargs: {exact: [[a, b]]}\n", func(e *Evidence) { e.Event.Args = []string{"a", "b"} }, ""},
		{"args exact mismatch", "kernel: {signers: [k]}\nargs: {exact: [[a, b]]}\n", func(e *Evidence) { e.Event.Args = []string{"a"} }, `args: command override ["a"] is not one of the 1 command(s) the policy allows`},
		{"sha384 kernel cannot be signature-checked", "kernel: {signers: [k]}\n", func(e *Evidence) { e.Event.Kernel = "sha384:" + strings.Repeat("a", 96) }, "signatures are verified from the sha256 digest"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := ev()
			if tc.mutate != nil {
				tc.mutate(&e)
			}
			v := base(tc.policy).Evaluate(context.Background(), e)
			if tc.want == "" {
				if !v.Allow {
					t.Fatalf("denied: %q", v.Reasons)
				}
				return
			}
			if v.Allow || len(v.Reasons) != 1 || !strings.Contains(v.Reasons[0], tc.want) {
				t.Fatalf("verdict allow=%v reasons=%q, want one containing %q", v.Allow, v.Reasons, tc.want)
			}
		})
	}
}

func TestEvaluateNilAndEmptySet(t *testing.T) {
	var s *Set
	v := s.Evaluate(context.Background(), Evidence{Event: measure.LaunchEvent{Policy: "x"}})
	if v.Allow || len(v.Reasons) != 1 {
		t.Fatalf("%+v", v)
	}
	empty, _ := NewSet()
	if v := empty.Evaluate(context.Background(), Evidence{Event: measure.LaunchEvent{Policy: "x"}}); v.Allow {
		t.Fatal("empty set allowed")
	}
}

func TestEvaluateCELCancelled(t *testing.T) {
	f := newEvalFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	v := f.set.Evaluate(ctx, f.evidence(t))
	if v.Allow {
		t.Fatal("allowed with a cancelled context: CEL rules must fail closed")
	}
}

func TestClaims(t *testing.T) {
	f := newEvalFixture(t)
	ev := f.evidence(t)
	// ops is not a kernel signer of the rule, but CEL sees every policy
	// signer that vouches for the artifact.
	ev.Signatures = append(ev.Signatures, ArtifactSignature{Artifact: "kernel", Signature: f.ops.signBlob(t, f.kernel)})
	v := f.set.Evaluate(context.Background(), ev)
	if !v.Allow {
		t.Fatalf("denied: %q", v.Reasons)
	}
	c := v.Claims
	if c["node_id"] != "prod-17" || c["kernel"] != digestOf(f.kernel) || c["image"] != f.image {
		t.Fatalf("claims %v", c)
	}
	signers := c["signers"].(map[string][]string)
	if strings.Join(signers["kernel"], ",") != "ops,release" || strings.Join(signers["image"], ",") != "ops" || len(signers["initrd"]) != 0 {
		t.Fatalf("signers %v", signers)
	}
	if c["host_pcrs"].(map[int64]string)[7] != hex.EncodeToString(f.pcr7) {
		t.Fatalf("host_pcrs %v", c["host_pcrs"])
	}
}

func TestPreflight(t *testing.T) {
	f := newEvalFixture(t)
	tests := []struct {
		name   string
		mutate func(ev *Evidence)
		want   []string // substrings of the reasons, in order; nil = allow
	}{
		{"allow", func(ev *Evidence) {}, nil},
		// What only the attested facts can show is left to Evaluate.
		{"host PCRs not known before boot", func(ev *Evidence) { ev.HostPCRs = nil }, nil},
		{"CEL rules not run before boot", func(ev *Evidence) { ev.NodeID = "staging-1" }, nil},
		{"unknown policy", func(ev *Evidence) { ev.Event.Policy = "nope" }, []string{`policy "nope" is not loaded`}},
		{"kernel digest", func(ev *Evidence) {
			other := []byte("another kernel")
			ev.Event.Kernel = digestOf(other)
			ev.Signatures[0].Signature = f.release.signBlob(t, other)
		}, []string{"kernel: " + digestOf([]byte("another kernel")) + " not allowed"}},
		{"image signed by a stranger", func(ev *Evidence) {
			p := cosignPayload("x", f.image)
			ev.Signatures[1] = ArtifactSignature{Artifact: "image", Signature: f.stranger.signBlob(t, p), Payload: p}
		}, []string{"image: manifest " + f.image + ": none of 1 signature(s) verifies"}},
		{"command line", func(ev *Evidence) {
			ev.Event.Cmdline = "console=ttyS0 init=/bin/sh"
			ev.Event.CmdlineDigest = digestOf([]byte(ev.Event.Cmdline))
		}, []string{`cmdline: parameter(s) "init=/bin/sh" not allowed`}},
		{"outside validity", func(ev *Evidence) { ev.Time = time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC) }, []string{"validity: policy web expired"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := f.evidence(t)
			tc.mutate(&ev)
			v := f.set.Preflight(context.Background(), ev)
			if len(v.Secrets) != 0 {
				t.Fatalf("Preflight granted secrets: %v", v.Secrets)
			}
			if tc.want == nil {
				if !v.Allow || len(v.Reasons) != 0 {
					t.Fatalf("want allow, got %+v", v)
				}
				return
			}
			if v.Allow || len(v.Reasons) != len(tc.want) {
				t.Fatalf("reasons %q, want %d matching %q", v.Reasons, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(v.Reasons[i], w) {
					t.Errorf("reason %d = %q, want it to contain %q", i, v.Reasons[i], w)
				}
			}
		})
	}
	// The same host-PCR and CEL cases are denies once attested.
	ev := f.evidence(t)
	ev.NodeID, ev.HostPCRs = "staging-1", nil
	if v := f.set.Evaluate(context.Background(), ev); v.Allow {
		t.Fatal("Evaluate allowed what only Preflight may overlook")
	}
}
