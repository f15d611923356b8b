package channel

import "fmt"

// The actions of a Revoke (a policy's on_revoke).
const (
	RevokeStop        = "stop"         // remove the secrets, then stop the workload
	RevokeWipeSecrets = "wipe-secrets" // remove the secrets; the workload runs on
)

// Revoke tells the agent that attestd revoked the sandbox (or some of its
// secrets) while the workload runs: it removes the secrets named (none:
// every file in /run/secrets), answers Done, and then, for RevokeStop,
// stops the workload as Stop does with GraceSeconds.
type Revoke struct {
	Seq          uint64   `json:"seq"`
	Action       string   `json:"action"`
	Names        []string `json:"names,omitempty"`
	GraceSeconds int      `json:"grace_seconds,omitempty"`
}

// Validate checks a Revoke: a known action, safe and unique secret names,
// at most MaxSecrets, and a grace period within Stop's bounds.
func (r *Revoke) Validate() error {
	if r.Action != RevokeStop && r.Action != RevokeWipeSecrets {
		return fmt.Errorf("channel: revoke: action %q, want %q or %q", r.Action, RevokeStop, RevokeWipeSecrets)
	}
	if err := checkNames("revoke", r.Names); err != nil {
		return err
	}
	st := Stop{GraceSeconds: r.GraceSeconds}
	return st.Validate()
}

// Rotate carries new versions of secrets the guest holds, each wrapped to
// the guest key for the sandbox id and name, as in Start: the agent
// replaces each file atomically (write beside it, rename over it), then
// answers Done. A secret that does not open changes nothing.
type Rotate struct {
	Seq     uint64   `json:"seq"`
	Secrets []Secret `json:"secrets"`
}

// Validate checks a Rotate: 1..MaxSecrets secrets with safe, unique names.
func (r *Rotate) Validate() error {
	if len(r.Secrets) == 0 {
		return fmt.Errorf("channel: rotate: no secrets")
	}
	names := make([]string, len(r.Secrets))
	for i, s := range r.Secrets {
		names[i] = s.Name
	}
	return checkNames("rotate", names)
}

// Done answers a Revoke or Rotate with its sequence number: Removed is how
// many secret files a Revoke removed; Error says why a Rotate (or a
// removal) failed, "" when it did not.
type Done struct {
	Seq     uint64 `json:"seq"`
	Removed int    `json:"removed,omitempty"`
	Error   string `json:"error,omitempty"`
}

// checkNames checks secret names as Start.Validate does.
func checkNames(what string, names []string) error {
	if len(names) > MaxSecrets {
		return fmt.Errorf("channel: %s: %d secrets, the limit is %d", what, len(names), MaxSecrets)
	}
	seen := make(map[string]bool, len(names))
	for i, n := range names {
		if !safeName(n) || n == "." || n == ".." {
			return fmt.Errorf("channel: %s: secret %d name %q: want a file name of 1..128 characters from [A-Za-z0-9._-]", what, i, n)
		}
		if seen[n] {
			return fmt.Errorf("channel: %s: secret %q given twice", what, n)
		}
		seen[n] = true
	}
	return nil
}
