package policy

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/signing/simplesigning"
)

// Limits on evidence fields, so a hostile launcher cannot make evaluation expensive.
const (
	maxSignaturesPerArtifact = 16
	maxPayloadSize           = 64 << 10
	maxSignatureSize         = 4096
)

// Evidence is what attestd hands policy AFTER every cryptographic check
// passed (AK trusted, quote signature, nonce, PCR digest, launch log replay).
// Policy trusts these fields except Signatures, which it verifies itself
// against the signer keys of the policy the launch names.
type Evidence struct {
	NodeID     string
	Event      measure.LaunchEvent
	Signatures []ArtifactSignature
	HostPCRs   map[int][]byte // quoted, verified SHA-256 PCR values of the host
	Firmware   *Firmware      // from the host's verified firmware event log; nil: none was sent
	Time       time.Time      // attestd's clock at evaluation; required by validity windows
}

// ArtifactSignature is one cosign-compatible signature the launcher sent.
type ArtifactSignature struct {
	// Artifact is "kernel", "initrd" or "image".
	Artifact string
	// Signature is raw ASN.1 DER (decode cosign's base64 first). For a kernel
	// or initrd it signs the artifact bytes (verified from their digest);
	// for an image it signs Payload.
	Signature []byte
	// Payload is, for an image, the cosign simple-signing JSON that was signed.
	Payload []byte
	// PublicKey optionally holds the PEM key the launcher verified with. It is
	// never trusted: it only lets a deny reason name the key that did sign
	// when that key is not a signer of the policy.
	PublicKey []byte
}

// Verdict is the result of judging evidence against one policy.
type Verdict struct {
	Allow  bool
	Policy string // the policy judged against ("" if the launch named none that is loaded)
	// PolicyDigest is the sha256 of the policy file, for the audit record.
	PolicyDigest string
	// Reasons lists every reason for a deny, each saying what was expected
	// and what was seen. Safe to show to the launcher's user.
	Reasons []string
	// Secrets are the secret names to release; empty unless Allow.
	Secrets []string
	// Releases (Preflight only) are the secret names the policy releases
	// to a launch whose attestation passes: a plan, never a grant, so that
	// the caller can check that they exist before the launch boots.
	Releases []string
	// Claims are the attested facts the policy saw (the CEL variables), for
	// the attestation result token.
	Claims map[string]any
	// OnRevoke is the policy's on_revoke (OnRevokeStop when the launch
	// named no loaded policy).
	OnRevoke string
}

// Evaluate judges ev against the policy its launch event names, and only
// that one. Every check runs, so a deny carries every reason at once. An
// unknown policy, an error in a CEL rule, a missing time or a malformed
// digest are denies (fail closed). Evaluate is safe for concurrent use.
func (s *Set) Evaluate(ctx context.Context, ev Evidence) Verdict {
	pol, deny := s.named(ev.Event.Policy)
	if pol == nil {
		return deny
	}
	return pol.Evaluate(ctx, ev)
}

// Preflight judges, before a launch boots, what is known then: the
// validity window, kernel, initrd, command line, image, command override and
// their signatures, against the policy the event names. It ignores host boot
// state and CEL rules (they need the attested facts) and never grants
// secrets: only Evaluate, after the quote is verified, is the judgement. A
// launcher uses it to refuse early; Allow means nothing known before boot
// stands in the way.
func (s *Set) Preflight(ctx context.Context, ev Evidence) Verdict {
	pol, deny := s.named(ev.Event.Policy)
	if pol == nil {
		return deny
	}
	e := &evaluation{pol: pol, ev: ev, verified: map[string][]string{}}
	e.validity()
	e.launch()
	return Verdict{Allow: len(e.reasons) == 0, Policy: pol.Name, PolicyDigest: pol.Digest, Reasons: e.reasons, Releases: slices.Clone(pol.Secrets)}
}

// named finds the policy a launch names, or returns the deny that says why
// there is none.
func (s *Set) named(name string) (*Policy, Verdict) {
	if name == "" {
		return nil, Verdict{Reasons: []string{"the launch names no policy: pass --policy NAME to 'launcher run'"}}
	}
	var pol *Policy
	if s != nil {
		pol = s.byName[name]
	}
	if pol == nil {
		return nil, Verdict{Reasons: []string{fmt.Sprintf("policy %q is not loaded on this attestation service: check the name with your administrator", truncate(name, 64))}}
	}
	return pol, Verdict{}
}

// Evaluate judges ev against this policy, whatever policy the event names.
func (p *Policy) Evaluate(ctx context.Context, ev Evidence) Verdict {
	e := &evaluation{pol: p, ev: ev, verified: map[string][]string{}}
	e.validity()
	e.launch()
	e.hostPCRs()
	e.secureBoot()
	e.hostKernelCmdline()
	claims := e.claims()
	e.rules(ctx, claims)
	v := Verdict{Policy: p.Name, PolicyDigest: p.Digest, Reasons: e.reasons, Claims: claims, OnRevoke: p.OnRevoke}
	if len(e.reasons) == 0 {
		v.Allow = true
		v.Secrets = slices.Clone(p.Secrets)
	}
	return v
}

type evaluation struct {
	pol      *Policy
	ev       Evidence
	reasons  []string
	verified map[string][]string // artifact → signer names whose signature verified
}

// launch checks what the launch event says will run: kernel, initrd,
// command line, image and command override, with their signatures.
func (e *evaluation) launch() {
	e.artifact("kernel", e.pol.Kernel, e.ev.Event.Kernel, true)
	e.artifact("initrd", e.pol.Initrd, e.ev.Event.Initrd, false)
	e.cmdline()
	e.artifact("image", e.pol.Image, e.ev.Event.Image, false)
	e.args()
	e.workload()
	e.templates()
}

func (e *evaluation) deny(format string, a ...any) {
	e.reasons = append(e.reasons, fmt.Sprintf(format, a...))
}

func (e *evaluation) validity() {
	p := e.pol
	if p.NotBefore.IsZero() && p.NotAfter.IsZero() {
		return
	}
	t := e.ev.Time
	if t.IsZero() {
		e.deny("validity: the policy has a validity window but the evidence carries no time")
		return
	}
	if !p.NotBefore.IsZero() && t.Before(p.NotBefore) {
		e.deny("validity: policy %s is not valid before %s; it is %s", p.Name, p.NotBefore.UTC().Format(time.RFC3339), t.UTC().Format(time.RFC3339))
	}
	if !p.NotAfter.IsZero() && t.After(p.NotAfter) {
		e.deny("validity: policy %s expired at %s; it is %s", p.Name, p.NotAfter.UTC().Format(time.RFC3339), t.UTC().Format(time.RFC3339))
	}
}

// listDigests shows allowed values, at most 3 then a count.
func listDigests(ds []string) string {
	if len(ds) <= 3 {
		return strings.Join(ds, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(ds[:3], ", "), len(ds)-3)
}

func listSigners(ss []*Signer) string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.String()
	}
	return strings.Join(names, ", ")
}

func (e *evaluation) artifact(what string, r *ArtifactRule, digest string, required bool) {
	subject := digest // how the seen artifact is named in reasons
	if what == "image" {
		subject = "manifest " + digest
	}
	if digest == "" {
		switch {
		case required:
			e.deny("%s: the launch event has no %s digest", what, what)
		case r != nil:
			e.deny("%s: the launch has no %s but the policy requires one", what, what)
		}
		return
	}
	if r == nil {
		e.deny("%s: %s given, but the policy allows no %s (it has no %s section)", what, subject, what, what)
		return
	}
	if msg := checkDigest(digest); msg != "" {
		e.deny("%s: launch event digest %q is malformed: %s", what, truncate(digest, 80), msg)
		return
	}
	var parts []string
	if r.HasDigests {
		switch {
		case len(r.Digests) == 0:
			parts = append(parts, fmt.Sprintf("%s not allowed: the policy's %s digests list is empty, so it allows none", subject, what))
		case !slices.Contains(r.Digests, digest):
			parts = append(parts, fmt.Sprintf("%s not allowed (allowed: %s)", subject, listDigests(r.Digests)))
		}
	}
	c := e.checkSignatures(what, digest)
	e.verified[what] = c.verified
	if r.HasSigners {
		if msg := e.signatures(what, r, c); msg != "" {
			if len(parts) == 0 {
				msg = subject + ": " + msg
			}
			parts = append(parts, msg)
		}
	}
	if len(parts) > 0 {
		e.deny("%s: %s", what, strings.Join(parts, "; "))
	}
}

// sigCheck is what the launcher's signatures for one artifact showed.
type sigCheck struct {
	sent      int      // signatures sent for the artifact (up to the limit)
	verified  []string // names of policy signers with a valid signature, sorted
	strangers []string // short fingerprints of non-policy keys that did sign
	problems  []string // signatures that could not be used, and why
}

// checkSignatures verifies every signature the launcher sent for one
// artifact against every signer of the policy, so that rules and CEL see
// all the policy's signers that vouch for it.
func (e *evaluation) checkSignatures(what, digest string) *sigCheck {
	c := &sigCheck{}
	var sigs []ArtifactSignature
	for _, s := range e.ev.Signatures {
		if s.Artifact == what {
			sigs = append(sigs, s)
		}
	}
	if len(sigs) > maxSignaturesPerArtifact {
		c.problems = append(c.problems, fmt.Sprintf("only the first %d of %d signatures were checked", maxSignaturesPerArtifact, len(sigs)))
		sigs = sigs[:maxSignaturesPerArtifact]
	}
	c.sent = len(sigs)
	if len(sigs) == 0 || len(e.pol.Signers) == 0 {
		return c
	}
	var raw []byte
	if what != "image" {
		if !strings.HasPrefix(digest, "sha256:") {
			c.problems = append(c.problems, "signatures are verified from the sha256 digest, but the launch measured it with "+strings.SplitN(digest, ":", 2)[0]+"; launch with sha256")
			return c
		}
		raw, _ = hex.DecodeString(strings.TrimPrefix(digest, "sha256:"))
	}
	names := sortedKeys(e.pol.Signers)
	for _, sig := range sigs {
		if len(sig.Signature) > maxSignatureSize {
			c.problems = append(c.problems, fmt.Sprintf("a signature of %d bytes is too large", len(sig.Signature)))
			continue
		}
		msg := raw
		if what == "image" {
			if len(sig.Payload) == 0 {
				c.problems = append(c.problems, "an image signature came without its payload")
				continue
			}
			if len(sig.Payload) > maxPayloadSize {
				c.problems = append(c.problems, fmt.Sprintf("an image signature payload of %d bytes is too large", len(sig.Payload)))
				continue
			}
			msg = sig.Payload
		}
		var ok []string
		for _, n := range names {
			k := e.pol.Signers[n]
			if verify(k, what, msg, sig.Signature) {
				ok = append(ok, n)
			}
		}
		if len(ok) == 0 {
			if fp := strangerKey(sig, what, msg); fp != "" {
				c.strangers = appendUnique(c.strangers, fp)
			}
			continue
		}
		if what == "image" {
			signed, err := payloadDigest(sig.Payload)
			if err != nil {
				c.problems = append(c.problems, fmt.Sprintf("signature by %s has an unusable payload: %v", strings.Join(ok, ", "), err))
				continue
			}
			if signed != digest {
				c.problems = append(c.problems, fmt.Sprintf("signature by %s is for manifest %s, not %s", strings.Join(ok, ", "), signed, digest))
				continue
			}
		}
		c.verified = appendUnique(c.verified, ok...)
	}
	sort.Strings(c.verified)
	return c
}

func verify(k *Signer, what string, msg, sig []byte) bool {
	if what == "image" {
		return k.verifyMessage(msg, sig)
	}
	return k.verifyDigest(msg, sig)
}

// signatures says why the rule's signer requirement is not met, or "".
func (e *evaluation) signatures(what string, r *ArtifactRule, c *sigCheck) string {
	if len(r.Signers) == 0 {
		return "the policy's " + what + " signers list is empty, so no signature is accepted"
	}
	for _, s := range r.Signers {
		if slices.Contains(c.verified, s.Name) {
			return ""
		}
	}
	if c.sent == 0 {
		return fmt.Sprintf("no signature was sent; a signature by %s is required", listSigners(r.Signers))
	}
	var b strings.Builder
	for _, fp := range c.strangers {
		fmt.Fprintf(&b, "signed by key %s which is not a signer of this policy; ", fp)
	}
	for _, n := range c.verified {
		fmt.Fprintf(&b, "signed by %s which is not an allowed %s signer; ", e.pol.Signers[n], what)
	}
	for _, p := range c.problems {
		b.WriteString(p)
		b.WriteString("; ")
	}
	fmt.Fprintf(&b, "none of %d signature(s) verifies with an allowed %s signer (%s)", c.sent, what, listSigners(r.Signers))
	return b.String()
}

// strangerKey returns the short fingerprint of the launcher-named key when
// that key did make the signature (so the reason can name it), else "".
func strangerKey(sig ArtifactSignature, what string, msg []byte) string {
	if len(sig.PublicKey) == 0 || len(sig.PublicKey) > MaxKeySize {
		return ""
	}
	k, err := ParsePublicKey("launcher", sig.PublicKey)
	if err != nil {
		return ""
	}
	if !verify(k, what, msg, sig.Signature) {
		return ""
	}
	return short(k.Fingerprint)
}

// payloadDigest returns the manifest digest a cosign payload vouches for,
// parsed by the same strict rules as the launcher's own check
// (simplesigning.Parse): unknown critical fields, a missing
// docker-reference or another payload type are refused here too.
func payloadDigest(payload []byte) (string, error) {
	ss, err := simplesigning.Parse(payload)
	if err != nil {
		var pe *simplesigning.Error
		if errors.As(err, &pe) {
			return "", errors.New(truncate(pe.Reason(), 200))
		}
		return "", errors.New(truncate(err.Error(), 200))
	}
	return ss.Critical.Image.DockerManifestDigest, nil
}

func appendUnique(list []string, xs ...string) []string {
	for _, x := range xs {
		if !slices.Contains(list, x) {
			list = append(list, x)
		}
	}
	return list
}

func (e *evaluation) cmdline() {
	r := e.pol.Cmdline
	got := e.ev.Event.Cmdline
	if r == nil {
		e.deny("cmdline: the policy allows no kernel command line")
		return
	}
	// Before any rule: a command line the guest kernel could split
	// differently from ParseCmdline is denied whatever the rule says.
	params, err := ParseCmdline(got)
	if err != nil {
		e.cmdlineDigest()
		e.deny("cmdline: %q refused: %v", truncate(got, 256), err)
		return
	}
	if r.Params == nil {
		if len(r.Exact) == 0 {
			e.deny("cmdline: %q not allowed: the policy's cmdline exact list is empty, so it allows none", truncate(got, 256))
			return
		}
		e.cmdlineDigest()
		if !slices.Contains(r.Exact, got) {
			shown := make([]string, 0, 3)
			for _, x := range r.Exact[:min(3, len(r.Exact))] {
				shown = append(shown, fmt.Sprintf("%q", x))
			}
			more := ""
			if len(r.Exact) > 3 {
				more = fmt.Sprintf(" and %d more", len(r.Exact)-3)
			}
			e.deny("cmdline: %q is not one of the allowed command lines (%s%s)", truncate(got, 256), strings.Join(shown, ", "), more)
		}
		return
	}
	e.cmdlineDigest()
	var bad []string
	for _, tok := range params {
		if !slices.ContainsFunc(r.Params.Allow, func(p string) bool { return matchParam(p, tok) }) {
			bad = append(bad, fmt.Sprintf("%q", truncate(tok, 80)))
		}
	}
	if len(bad) > 0 {
		if len(bad) > 8 {
			bad = append(bad[:8], fmt.Sprintf("and %d more", len(bad)-8))
		}
		e.deny("cmdline: parameter(s) %s not allowed (allowed: %s)", strings.Join(bad, ", "), strings.Join(r.Params.Allow, " "))
	}
	for _, req := range r.Params.Require {
		if !slices.ContainsFunc(params, func(tok string) bool { return matchParam(req, tok) }) {
			e.deny("cmdline: required parameter %q is missing from %q", req, truncate(got, 256))
		}
	}
}

// cmdlineDigest denies an event whose cmdline_digest is set but is not the
// digest of its command line (attestd and measure check this too: defence
// in depth, since rules may look at either).
func (e *evaluation) cmdlineDigest() {
	d := e.ev.Event.CmdlineDigest
	if d == "" {
		return
	}
	alg, _, err := measure.ParseDigest(d)
	if err != nil || measure.DigestCmdline(alg, e.ev.Event.Cmdline) != d {
		e.deny("cmdline: cmdline_digest %s is not the digest of the command line %q", truncate(d, 80), truncate(e.ev.Event.Cmdline, 256))
	}
}

func (e *evaluation) args() {
	got := e.ev.Event.Args
	if len(got) == 0 {
		return
	}
	r := e.pol.Args
	if r.Any {
		return
	}
	shown := fmt.Sprintf("%q", got)
	if len(shown) > 256 {
		shown = shown[:256] + "…"
	}
	if len(r.Exact) == 0 {
		e.deny("args: command override %s not allowed: this policy runs only the image's own command (args.allow: none)", shown)
		return
	}
	for _, ex := range r.Exact {
		if slices.Equal(ex, got) {
			return
		}
	}
	e.deny("args: command override %s is not one of the %d command(s) the policy allows", shown, len(r.Exact))
}

func (e *evaluation) hostPCRs() {
	idxs := make([]int, 0, len(e.pol.HostPCRs))
	for i := range e.pol.HostPCRs {
		idxs = append(idxs, i)
	}
	sort.Ints(idxs)
	for _, i := range idxs {
		want := e.pol.HostPCRs[i]
		got, ok := e.ev.HostPCRs[i]
		wantHex := make([]string, len(want))
		for j, w := range want {
			wantHex[j] = hex.EncodeToString(w)
		}
		if !ok {
			e.deny("host: PCR %d was not quoted; the policy requires one of %s", i, strings.Join(wantHex, ", "))
			continue
		}
		if !slices.ContainsFunc(want, func(w []byte) bool { return bytes.Equal(w, got) }) {
			e.deny("host: PCR %d is %s, expected one of %s", i, hex.EncodeToString(got), strings.Join(wantHex, ", "))
		}
	}
}

// claims builds the CEL variables (and the token claims) from the evidence.
func (e *evaluation) claims() map[string]any {
	ev := e.ev.Event
	pcrs := make(map[int64]string, len(e.ev.HostPCRs))
	for i, v := range e.ev.HostPCRs {
		pcrs[int64(i)] = hex.EncodeToString(v)
	}
	signers := map[string][]string{}
	for _, a := range []string{"kernel", "initrd", "image"} {
		signers[a] = append([]string{}, e.verified[a]...)
	}
	args := append([]string{}, ev.Args...)
	envKeys := append([]string{}, ev.EnvKeys...)
	ports := append([]string{}, ev.Ports...)
	volumes := append([]string{}, ev.Volumes...)
	return map[string]any{
		"policy":         e.pol.Name,
		"node_id":        e.ev.NodeID,
		"sandbox_id":     ev.SandboxID,
		"kernel":         ev.Kernel,
		"initrd":         ev.Initrd,
		"cmdline":        ev.Cmdline,
		"cmdline_digest": ev.CmdlineDigest,
		"image":          ev.Image,
		"image_config":   ev.ImageConfig,
		"image_disk":     ev.ImageDisk,
		"template":       e.templateClaims(),
		"args":           args,
		"env_keys":       envKeys,
		"env_digest":     ev.EnvDigest,
		"working_dir":    ev.WorkingDir,
		"user":           ev.User,
		"network":        networkClaim(ev.Network),
		"ports":          ports,
		"volumes":        volumes,
		"host_pcrs":      pcrs,
		"firmware":       firmwareClaims(e.ev.Firmware),
		"signers":        signers,
		"time":           e.ev.Time.UTC(),
	}
}

func (e *evaluation) rules(ctx context.Context, claims map[string]any) {
	for _, r := range e.pol.Rules {
		ok, err := evalRule(ctx, r, claims)
		switch {
		case err != nil:
			e.deny("rule %s: evaluation failed (denied): %v", r.Name, err)
		case !ok && r.Message != "":
			e.deny("rule %s: %s", r.Name, r.Message)
		case !ok:
			e.deny("rule %s: %s is false", r.Name, truncate(strings.Join(strings.Fields(r.Expr), " "), 200))
		}
	}
}
