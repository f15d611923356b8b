package attestd

import (
	"encoding/hex"
	"fmt"
	"math"
	"strings"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/token"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NonceSize lies within the bounds the store and the verifier enforce:
// these constants do not compile otherwise.
const (
	_ = uint(NonceSize - limits.MinNonceSize)
	_ = uint(limits.MaxNonceSize - NonceSize)
)

// Size limits on what attestd reads from the network.
const (
	MaxRequestSize  = 8 << 20  // one gRPC request message
	MaxResponseSize = 80 << 20 // one response (a release of many large secrets)

	MaxEKPublic      = 2 << 10  // TPMT_PUBLIC of an EK (RSA-2048 ≈ 320 bytes)
	MaxEKCertificate = 16 << 10 // DER
	MaxAKPublic      = 2 << 10
	MaxCredSecret    = 64 // sizeof(TPMU_HA)
	// NonceSize is the size of the nonces attestd issues and accepts
	// back: within limits.MinNonceSize..MaxNonceSize, and small enough
	// for the qualifying data of any TPM with SHA-256 (34 bytes).
	NonceSize        = 32
	MaxQuote         = 4 << 10 // TPMS_ATTEST
	MaxSignature     = 1 << 10 // TPMT_SIGNATURE (RSA-4096 = 512 + header)
	MaxLaunchLog     = 4 << 20
	MaxFirmwareLog   = 3 << 20
	MaxSandboxID     = 128
	MaxSignatures    = 16
	MaxArtSignature  = 8 << 10
	MaxArtPayload    = 64 << 10
	MaxToken         = token.MaxSize
	MaxSecretName    = 128
	MaxSecretMeta    = 16
	MaxPolicyName    = 256
	MaxCmdline       = 4096
	MaxArgs          = 256
	MaxArgLen        = 4096
	MaxAuditPage     = 1000
	DefaultAuditPage = 100
)

// invalid is the InvalidArgument error naming the field.
func invalid(field, format string, a ...any) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, fmt.Sprintf(format, a...))
}

// validateNodeID accepts "sha256:" + 64 lower-case hex digits.
func validateNodeID(field, id string) error {
	if id == "" {
		return invalid(field, "missing")
	}
	h, ok := strings.CutPrefix(id, "sha256:")
	if !ok || len(h) != 64 || !isLowerHex(h) {
		return invalid(field, "want \"sha256:\" and 64 lower-case hex digits (as returned by Enroll)")
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// validSandboxID accepts 1..128 characters of [A-Za-z0-9._-].
func validateSandboxID(field, id string) error {
	if id == "" {
		return invalid(field, "missing")
	}
	if len(id) > MaxSandboxID {
		return invalid(field, "%d bytes, the limit is %d", len(id), MaxSandboxID)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return invalid(field, "use only letters, digits, '.', '_' and '-'")
		}
	}
	return nil
}

// validateSandboxIDs checks what an Attest request names: one sandbox
// (sandbox_id) or, for a re-attestation, several (sandbox_ids), and the
// re-attestation interval.
func validateSandboxIDs(r *bulwarkv1.AttestRequest) error {
	if r.GetReattestIntervalSeconds() > MaxReattestInterval {
		return invalid("reattest_interval_seconds", "%d: the limit is %d (a day)", r.GetReattestIntervalSeconds(), MaxReattestInterval)
	}
	if !isReattest(r) {
		return validateSandboxID("sandbox_id", r.GetSandboxId())
	}
	if r.GetSandboxId() != "" {
		return invalid("sandbox_ids", "give sandbox_id or sandbox_ids, not both")
	}
	if len(r.GetSandboxRecord()) > 0 {
		return invalid("sandbox_record", "not used with sandbox_ids: attestd finds each kept sandbox in the verified log")
	}
	seen := map[string]bool{}
	for _, f := range []struct {
		name string
		ids  []string
	}{{"sandbox_ids", r.GetSandboxIds()}, {"ended_sandbox_ids", r.GetEndedSandboxIds()}} {
		if len(f.ids) > MaxReattestSandboxes {
			return invalid(f.name, "%d sandboxes, the limit is %d per request", len(f.ids), MaxReattestSandboxes)
		}
		for i, id := range f.ids {
			if err := validateSandboxID(fmt.Sprintf("%s[%d]", f.name, i), id); err != nil {
				return err
			}
			if seen[id] {
				return invalid(fmt.Sprintf("%s[%d]", f.name, i), "%q named twice", id)
			}
			seen[id] = true
		}
	}
	return nil
}

// isReattest says whether an Attest request is a host service's
// re-attestation (sandbox_ids, ended_sandbox_ids) rather than a launch's.
func isReattest(r *bulwarkv1.AttestRequest) bool {
	return len(r.GetSandboxIds()) > 0 || len(r.GetEndedSandboxIds()) > 0
}

func checkBytes(field string, b []byte, min, max int) error {
	if len(b) == 0 && min > 0 {
		return invalid(field, "missing")
	}
	if len(b) < min {
		return invalid(field, "%d bytes, want at least %d", len(b), min)
	}
	if len(b) > max {
		return invalid(field, "%d bytes, the limit is %d", len(b), max)
	}
	return nil
}

func validateEnroll(r *bulwarkv1.EnrollRequest) error {
	if err := checkBytes("ek_public", r.GetEkPublic(), 1, MaxEKPublic); err != nil {
		return err
	}
	if err := checkBytes("ek_certificate", r.GetEkCertificate(), 0, MaxEKCertificate); err != nil {
		return err
	}
	return checkBytes("ak_public", r.GetAkPublic(), 1, MaxAKPublic)
}

func validateActivate(r *bulwarkv1.ActivateCredentialRequest) error {
	if err := validateNodeID("node_id", r.GetNodeId()); err != nil {
		return err
	}
	return checkBytes("secret", r.GetSecret(), 1, MaxCredSecret)
}

// validateAttest checks every field's presence, form and size before any
// cryptography runs.
func validateAttest(r *bulwarkv1.AttestRequest) error {
	if err := validateNodeID("node_id", r.GetNodeId()); err != nil {
		return err
	}
	if len(r.GetNonce()) != NonceSize {
		if len(r.GetNonce()) == 0 {
			return invalid("nonce", "missing (call Challenge first)")
		}
		return invalid("nonce", "%d bytes, want %d (the value Challenge returned)", len(r.GetNonce()), NonceSize)
	}
	if err := validateQuote(r); err != nil {
		return err
	}
	// After a verified prefix (launch_log_offset > 0) the log may hold no
	// new record: a host re-attesting with nothing launched since.
	minLog := 1
	if r.GetLaunchLogOffset() > 0 {
		minLog = 0
	}
	if err := checkBytes("launch_log", r.GetLaunchLog(), minLog, MaxLaunchLog); err != nil {
		if len(r.GetLaunchLog()) > MaxLaunchLog {
			return invalid("launch_log", "%d bytes, the limit is %d per request: send only the records after the prefix attestd has verified "+
				"(ChallengeRequest.launch_log_prefix, launch_log_offset); a host whose log grew past the limit while attestd held no prefix "+
				"for it (a new attestd store) starts a new log by rebooting", len(r.GetLaunchLog()), MaxLaunchLog)
		}
		return err
	}
	if r.GetLaunchLogOffset() > math.MaxInt64 {
		return invalid("launch_log_offset", "%d: out of range", r.GetLaunchLogOffset())
	}
	if err := checkBytes("sandbox_record", r.GetSandboxRecord(), 0, measure.MaxRecordSize); err != nil {
		return err
	}
	if err := validateSandboxIDs(r); err != nil {
		return err
	}
	if err := validateSignatures(r.GetSignatures()); err != nil {
		return err
	}
	return checkBytes("firmware_event_log", r.GetFirmwareEventLog(), 0, MaxFirmwareLog)
}

// validateSignatures checks the artifact signatures a launcher sends.
func validateSignatures(sigs []*bulwarkv1.ArtifactSignature) error {
	if len(sigs) > MaxSignatures {
		return invalid("signatures", "%d entries, the limit is %d", len(sigs), MaxSignatures)
	}
	for i, sg := range sigs {
		f := fmt.Sprintf("signatures[%d]", i)
		if sg == nil {
			return invalid(f, "missing")
		}
		switch sg.GetArtifact() {
		case "kernel", "initrd", "image":
		default:
			return invalid(f+".artifact", "%q: want kernel, initrd or image", trunc(sg.GetArtifact()))
		}
		if err := checkBytes(f+".signature", sg.GetSignature(), 1, MaxArtSignature); err != nil {
			return err
		}
		if err := checkBytes(f+".payload", sg.GetPayload(), 0, MaxArtPayload); err != nil {
			return err
		}
	}
	return nil
}

// validatePreflight checks a preflight request's fields before any
// signature is verified.
func validatePreflight(r *bulwarkv1.PreflightRequest) error {
	if err := validateNodeID("node_id", r.GetNodeId()); err != nil {
		return err
	}
	if r.GetPolicy() == "" || len(r.GetPolicy()) > MaxPolicyName {
		return invalid("policy", "want 1..%d bytes (the policy name)", MaxPolicyName)
	}
	for _, d := range []struct {
		field, v string
		required bool
	}{{"kernel", r.GetKernel(), true}, {"initrd", r.GetInitrd(), false}, {"image", r.GetImage(), false}, {"image_config", r.GetImageConfig(), false},
		{"template_recipe", r.GetTemplateRecipe(), false}, {"template_ram", r.GetTemplateRam(), false}, {"template_state", r.GetTemplateState(), false}} {
		if d.v == "" && !d.required {
			continue
		}
		if _, _, err := measure.ParseDigest(d.v); err != nil {
			return invalid(d.field, "want a digest \"sha256:<hex>\": %v", err)
		}
	}
	if t := []string{r.GetTemplateRecipe(), r.GetTemplateRam(), r.GetTemplateState()}; (t[0] == "") != (t[1] == "") || (t[1] == "") != (t[2] == "") {
		return invalid("template_recipe", "give template_recipe, template_ram and template_state together (a clone), or none (a cold boot)")
	}
	if r.GetCmdline() == "" || len(r.GetCmdline()) > MaxCmdline {
		return invalid("cmdline", "want 1..%d bytes (the exact kernel command line)", MaxCmdline)
	}
	if len(r.GetArgs()) > MaxArgs {
		return invalid("args", "%d arguments, the limit is %d", len(r.GetArgs()), MaxArgs)
	}
	for i, a := range r.GetArgs() {
		if len(a) > MaxArgLen {
			return invalid(fmt.Sprintf("args[%d]", i), "%d bytes, the limit is %d", len(a), MaxArgLen)
		}
	}
	if err := validatePreflightWorkload(r); err != nil {
		return err
	}
	return validateSignatures(r.GetSignatures())
}

// validatePreflightWorkload checks the workload inputs of a preflight
// request as the launch event will hold them (measure's version 3 fields).
func validatePreflightWorkload(r *bulwarkv1.PreflightRequest) error {
	keys := r.GetEnvKeys()
	if len(keys) > measure.MaxEnv {
		return invalid("env_keys", "%d names, the limit is %d", len(keys), measure.MaxEnv)
	}
	for i, k := range keys {
		if err := measure.CheckEnvKey(k); err != nil {
			return invalid(fmt.Sprintf("env_keys[%d]", i), "%v", err)
		}
		if i > 0 && keys[i-1] >= k {
			return invalid("env_keys", "not sorted, each once")
		}
	}
	if (len(keys) == 0) != (r.GetEnvDigest() == "") {
		return invalid("env_digest", "give env_keys and env_digest together, or neither")
	}
	if d := r.GetEnvDigest(); d != "" {
		if _, _, err := measure.ParseDigest(d); err != nil {
			return invalid("env_digest", "want a digest \"sha256:<hex>\": %v", err)
		}
	}
	if d := r.GetWorkingDir(); d != "" {
		if err := measure.CheckWorkingDir(d); err != nil {
			return invalid("working_dir", "%v", err)
		}
	}
	if u := r.GetUser(); u != "" {
		if err := measure.CheckUser(u); err != nil {
			return invalid("user", "%v", err)
		}
	}
	switch r.GetNetwork() {
	case "", measure.NetworkUser, measure.NetworkTap:
	default:
		return invalid("network", "%q: want \"\" (none), %q or %q", trunc(r.GetNetwork()), measure.NetworkUser, measure.NetworkTap)
	}
	ports := r.GetPorts()
	if len(ports) > 0 && r.GetNetwork() != measure.NetworkUser {
		return invalid("ports", "port forwards need network %q", measure.NetworkUser)
	}
	if len(ports) > measure.MaxPorts {
		return invalid("ports", "%d forwards, the limit is %d", len(ports), measure.MaxPorts)
	}
	for i, s := range ports {
		p, err := measure.ParsePort(s)
		if err != nil {
			return invalid(fmt.Sprintf("ports[%d]", i), "%v", err)
		}
		if p.String() != s {
			return invalid(fmt.Sprintf("ports[%d]", i), "not in canonical form %q", p.String())
		}
	}
	// The launch event's own check covers volumes (count, form, targets).
	ev := measure.LaunchEvent{Volumes: r.GetVolumes()}
	if len(ev.Volumes) > 0 {
		if err := ev.CheckVolumes(); err != nil {
			return invalid("volumes", "%v", strings.TrimPrefix(err.Error(), "launch event: "))
		}
	}
	return nil
}

func validateRelease(r *bulwarkv1.ReleaseSecretsRequest) error {
	switch ref := r.GetRef().(type) {
	case *bulwarkv1.ReleaseSecretsRequest_AttestationId:
		return validateAttestationID("attestation_id", ref.AttestationId)
	case *bulwarkv1.ReleaseSecretsRequest_Token:
		if ref.Token == "" {
			return invalid("token", "missing")
		}
		if len(ref.Token) > MaxToken {
			return invalid("token", "%d bytes, the limit is %d", len(ref.Token), MaxToken)
		}
		return nil
	default:
		return invalid("ref", "give attestation_id or token")
	}
}

// Attestation ids are "att-" + 32 hex digits.
func validateAttestationID(field, id string) error {
	h, ok := strings.CutPrefix(id, "att-")
	if id == "" {
		return invalid(field, "missing")
	}
	if !ok || len(h) != 32 || !isLowerHex(h) {
		return invalid(field, "want \"att-\" and 32 hex digits (as returned by Attest)")
	}
	return nil
}

// normalizeEKAllow turns an --ek-allow entry (a node id or a bare hex EK
// fingerprint) into a node id.
func normalizeEKAllow(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	h := strings.TrimPrefix(s, "sha256:")
	if len(h) != 64 || !isLowerHex(h) {
		return "", fmt.Errorf("attestd: EK allow-list entry %q: want a node id \"sha256:<64 hex>\" or the hex SHA-256 of the EK's TPMT_PUBLIC", s)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", err
	}
	return "sha256:" + h, nil
}

// quoted is a request that carries a TPM quote (Attest, WatchNode).
type quoted interface {
	GetQuote() []byte
	GetSignature() []byte
	GetPcrs() map[uint32][]byte
}

// validateQuote checks a request's quote, signature and PCR values: sizes
// and indexes, each refused naming its field.
func validateQuote(r quoted) error {
	if err := checkBytes("quote", r.GetQuote(), 1, MaxQuote); err != nil {
		return err
	}
	if err := checkBytes("signature", r.GetSignature(), 1, MaxSignature); err != nil {
		return err
	}
	if len(r.GetPcrs()) == 0 {
		return invalid("pcrs", "missing (send the SHA-256 values of every quoted PCR)")
	}
	for idx, v := range r.GetPcrs() {
		if idx > limits.MaxPCR {
			return invalid("pcrs", "index %d: want 0..%d", idx, limits.MaxPCR)
		}
		if len(v) != 32 {
			return invalid("pcrs", "PCR %d is %d bytes, want 32 (SHA-256 bank)", idx, len(v))
		}
	}
	return nil
}

// trunc shortens a client-supplied string for a message.
func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
