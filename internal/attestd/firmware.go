package attestd

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"slices"

	"github.com/bulwark-project/bulwark/evidence"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/google/go-attestation/attest"
)

// firmwareState reads the host's Secure Boot state from its firmware event
// log, for policy. The events were replayed against the quoted PCRs and
// their variable data checked against their digests (evidence.ReplayFirmwareLog);
// go-attestation's ParseSecurebootState checks the rest (every PCR 7 event
// of an expected type and parsable, variables before the separator and
// never repeated, keys enrolled when Secure Boot is on, no debugger). The
// host kernel's command line is grub's last "kernel_cmdline" string in PCR
// 8, known only when PCRs 8 and 9 were quoted (hostPCRs) so that their
// events were replayed. Nil when no log was sent.
func firmwareState(events []attest.Event, hostPCRs map[int][]byte) *policy.Firmware {
	if events == nil {
		return nil
	}
	fw := &policy.Firmware{Events: []policy.FirmwareEvent{}}
	_, pcr8 := hostPCRs[8]
	_, pcr9 := hostPCRs[9]
	fw.BootLoaderQuoted = pcr8 && pcr9
	for i, e := range events {
		fw.Events = append(fw.Events, policy.FirmwareEvent{PCR: e.Index, Type: e.Type.String(), Digest: measure.FormatDigest(measure.SHA256, e.Digest), Data: e.Data})
		if e.Index == 4 && uint32(e.Type) == evEFIBootServicesApplication {
			fw.BootApps = append(fw.BootApps, measure.FormatDigest(measure.SHA256, e.Digest))
		}
		if text, prefix, ok := evidence.GrubString(&events[i]); ok && fw.BootLoaderQuoted && (prefix == "kernel_cmdline: " || prefix == "grub_kernel_cmdline ") {
			fw.KernelCmdline = string(bytes.TrimSuffix(text, []byte{0}))
		}
	}
	sb, err := attest.ParseSecurebootState(events)
	if err != nil {
		fw.Err = err.Error()
		return fw
	}
	fw.SecureBoot = sb.Enabled
	fw.DBXEntries = len(sb.ForbiddenKeys) + len(sb.ForbiddenHashes)
	fw.PK = keyList(sb.PlatformKeys, sb.PlatformKeyHashes)
	fw.KEK = keyList(sb.ExchangeKeys, sb.ExchangeKeyHashes)
	fw.DB = keyList(sb.PermittedKeys, sb.PermittedHashes)
	fw.DBX = keyList(sb.ForbiddenKeys, sb.ForbiddenHashes)
	for _, a := range append(slices.Clone(sb.PreSeparatorAuthority), sb.PostSeparatorAuthority...) {
		d := certDigest(a)
		if !slices.Contains(fw.Authorities, d) {
			fw.Authorities = append(fw.Authorities, d)
		}
	}
	return fw
}

// evEFIBootServicesApplication is EV_EFI_BOOT_SERVICES_APPLICATION: a UEFI
// application the firmware loaded (its digest is the Authenticode hash).
const evEFIBootServicesApplication = 0x80000003

// certDigest names a certificate by the SHA-256 of its DER.
func certDigest(c x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return measure.FormatDigest(measure.SHA256, sum[:])
}

// keyList is a Secure Boot database as "sha256:<hex>" entries: each
// certificate's DER digest, then each hash entry (a 32-byte hash as is; a
// hash of another size by its own SHA-256).
func keyList(certs []x509.Certificate, hashes [][]byte) []string {
	out := []string{}
	for _, c := range certs {
		out = append(out, certDigest(c))
	}
	for _, h := range hashes {
		if len(h) != sha256.Size {
			sum := sha256.Sum256(h)
			h = sum[:]
		}
		out = append(out, measure.FormatDigest(measure.SHA256, h))
	}
	return out
}
