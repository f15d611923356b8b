package policy

import (
	"crypto"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/sigstore/sigstore/pkg/signature"
)

// APIVersion is the only policy file version this package reads.
const APIVersion = "bulwark.dev/v1"

// Policy is one parsed and validated policy file. It is immutable after
// Parse and safe for concurrent use.
type Policy struct {
	Name        string
	Description string
	File        string // path it was loaded from
	Digest      string // "sha256:<hex>" of the file bytes, for audit records
	Signed      bool   // a detached signature by an admin key verified

	NotBefore, NotAfter time.Time // zero: unbounded

	Signers map[string]*Signer // by name as written in the policy

	Kernel  *ArtifactRule // never nil in a parsed policy
	Initrd  *ArtifactRule // nil: launches must not use an initrd
	Cmdline *CmdlineRule  // never nil in a parsed policy
	Image   *ArtifactRule // nil: launches must not run an image
	Args    ArgsRule
	Env     EnvRule      // the zero value: no variables over the image's
	Network *NetworkRule // nil: no network ("none") only
	Volumes *VolumeRule  // nil: no volumes

	Templates *TemplateRule // nil: clones of any template are judged like cold boots

	HostPCRs      map[int][][]byte // index (0..MaxHostPCR) → allowed SHA-256 values; empty: no requirement
	SecureBoot    *SecureBootRule  // nil: no requirement on the host's Secure Boot state
	KernelCmdline *HostCmdlineRule // nil: no requirement on the host kernel's command line

	Secrets []string // released to launches this policy allows
	// OnRevoke is what a running sandbox does when attestd revokes it
	// (docs/policy.md "on_revoke"), after its secrets are removed:
	// OnRevokeStop (the default) or OnRevokeWipeSecrets.
	OnRevoke string
	Rules    []*Rule // CEL rules, all must be true

	keyFiles []string // signer key files read, for the watcher
}

// The actions of on_revoke.
const (
	// OnRevokeStop: the guest removes the secrets, then stops the workload.
	OnRevokeStop = "stop"
	// OnRevokeWipeSecrets: the guest removes the secrets; the workload
	// keeps running without them.
	OnRevokeWipeSecrets = "wipe-secrets"
)

// MaxHostPCR is the highest host PCR a policy may require. The launcher
// quotes the host's PCRs 0-7 (firmware, option ROMs, boot loader, Secure
// Boot state) beside the launch PCR, and PCRs 8 and 9 (what the boot
// loader measured: grub's commands and kernel command line, the files it
// read) when it sends the firmware event log, which attestd replays against
// them; a requirement on any other PCR could never be met, so the parser
// refuses it.
const MaxHostPCR = 9

// MaxAlwaysQuotedHostPCR is the highest host PCR the launcher quotes
// whether or not it sends a firmware event log; those above it, up to
// MaxHostPCR (the boot loader's), are quoted only beside the log, so that
// the log's events for them are replayed (a host without one — a managed
// swtpm, the simulator — has nothing in them to judge).
const MaxAlwaysQuotedHostPCR = 7

// Signer is a public key that may sign artifacts, as named in a policy.
type Signer struct {
	Name        string
	Fingerprint string // "sha256:<hex>" of the DER SubjectPublicKeyInfo
	Key         crypto.PublicKey

	verifier signature.Verifier // SHA-256 verifier for Key
}

// ArtifactRule says which kernels, initrds or images are allowed. When both
// Digests and Signers are set, both must match.
type ArtifactRule struct {
	HasDigests bool     // the digests field was given (possibly empty: nothing allowed)
	Digests    []string // allowed "sha256:<hex>" digests
	HasSigners bool     // the signers field was given (possibly empty: nothing allowed)
	Signers    []*Signer
}

// CmdlineRule allows kernel command lines by exact value or by parameters.
// Exactly one of Exact and Params is set.
type CmdlineRule struct {
	Exact  []string
	Params *ParamsRule
}

// ParamsRule allows a command line whose every parameter matches an Allow
// pattern and which has a parameter matching each Require pattern.
// Patterns are "flag", "key=value" or "key=*" (any value).
type ParamsRule struct {
	Allow   []string
	Require []string
}

// ArgsRule says whether a launch may replace the image's command
// (LaunchEvent.Args). The zero value forbids any override.
type ArgsRule struct {
	Any   bool
	Exact [][]string
}

// Rule is one CEL expression over the claims; it must evaluate to true.
type Rule struct {
	Name    string
	Expr    string
	Message string // reason given when false; default names the rule
	prg     cel.Program
}
