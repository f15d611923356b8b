package attestd

import (
	"crypto/sha256"
	"slices"

	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/google/go-attestation/attest"
)

// firmwareState reads the host's Secure Boot state from its firmware event
// log, for policy. The events were replayed against the quoted PCRs and
// their variable data checked against their digests (replayFirmwareLog);
// go-attestation's ParseSecurebootState checks the rest (every PCR 7 event
// of an expected type and parsable, variables before the separator and
// never repeated, keys enrolled when Secure Boot is on, no debugger). Nil
// when no log was sent.
func firmwareState(events []attest.Event) *policy.Firmware {
	if events == nil {
		return nil
	}
	fw := &policy.Firmware{}
	sb, err := attest.ParseSecurebootState(events)
	if err != nil {
		fw.Err = err.Error()
		return fw
	}
	fw.SecureBoot = sb.Enabled
	fw.DBXEntries = len(sb.ForbiddenKeys) + len(sb.ForbiddenHashes)
	for _, a := range append(slices.Clone(sb.PreSeparatorAuthority), sb.PostSeparatorAuthority...) {
		sum := sha256.Sum256(a.Raw)
		d := measure.FormatDigest(measure.SHA256, sum[:])
		if !slices.Contains(fw.Authorities, d) {
			fw.Authorities = append(fw.Authorities, d)
		}
	}
	return fw
}
