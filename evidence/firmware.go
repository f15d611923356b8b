package evidence

import (
	"bytes"
	"crypto"
	_ "crypto/sha1" // for firmware event logs' SHA-1 digests
	_ "crypto/sha256"
	_ "crypto/sha512" // SHA-384
	"crypto/subtle"
	"fmt"
	"sort"

	"github.com/google/go-attestation/attest"
)

// ReplayFirmwareLog parses a TCG firmware event log (go-attestation) and
// replays it against pcrs, SHA-256 PCR values a quote verified; then the
// data of every event whose digest covers its data (the UEFI variable
// events, which say whether Secure Boot is on; grub's strings in PCR 8,
// the kernel command line among them) must hash to that digest. It
// returns the replayed events; a refusal is an *Error of
// CheckFirmwareLog (Invalid when the log does not parse).
func ReplayFirmwareLog(b []byte, pcrs map[int][]byte) (evs []attest.Event, err error) {
	defer func() {
		if r := recover(); r != nil { // third-party parser of untrusted bytes
			evs, err = nil, invalidf(CheckFirmwareLog, fieldFirmwareLog, "does not parse")
		}
	}()
	el, err := attest.ParseEventLog(b)
	if err != nil {
		return nil, invalidf(CheckFirmwareLog, fieldFirmwareLog, "%v", err)
	}
	idx := make([]int, 0, len(pcrs))
	for i := range pcrs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	list := make([]attest.PCR, 0, len(idx))
	for _, i := range idx {
		list = append(list, attest.PCR{Index: i, Digest: pcrs[i], DigestAlg: crypto.SHA256})
	}
	evs, err = el.Verify(list)
	if err != nil {
		return nil, refusef(CheckFirmwareLog, fieldFirmwareLog, "does not replay to the quoted PCRs: %v", err)
	}
	if err := checkEventData(evs); err != nil {
		return nil, refuse(CheckFirmwareLog, fieldFirmwareLog, err)
	}
	return evs, nil
}

// Event types whose digest, by the TCG PC Client Platform Firmware
// Profile, is the digest of the event's data itself. Replay verifies only
// digests; for these the data is what a reader acts on (the UEFI
// variables SecureBoot, PK, KEK, db, dbx; the separators; the authorities
// that verified a boot image), so it must hash to the verified digest.
var digestOfData = map[attest.EventType]string{
	0x00000004: "EV_SEPARATOR",
	0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
	0x80000006: "EV_EFI_GPT_EVENT",
	0x800000e0: "EV_EFI_VARIABLE_AUTHORITY",
}

// checkEventData refuses a replayed log in which an event whose digest
// covers its data carries data that does not hash to it: the digest
// replayed, the data was changed (a SecureBoot variable that reads 0 in a
// log whose quoted PCR 7 says otherwise).
func checkEventData(evs []attest.Event) error {
	for i := range evs {
		e := &evs[i]
		name, ok := digestOfData[e.Type]
		if !ok {
			continue
		}
		if dataMatches(e.Digest, e.Data) {
			continue
		}
		// Shims before rhboot/shim 8a27a48 measure one extra byte into
		// EV_EFI_VARIABLE_AUTHORITY's data (go-attestation issue 157, which
		// ParseSecurebootState accepts the same way).
		if name == "EV_EFI_VARIABLE_AUTHORITY" && len(e.Data) > 0 && dataMatches(e.Digest, e.Data[:len(e.Data)-1]) {
			continue
		}
		return fmt.Errorf("event %d (%s, PCR %d): its data does not hash to its replayed digest (the data was changed)", i, name, e.Index)
	}
	for i := range evs {
		e := &evs[i]
		text, _, ok := GrubString(e)
		if !ok {
			continue
		}
		// grub measures the text after its prefix, with or without the
		// NUL that ends it (go-eventlog's GrubStateFromTPMLog alike).
		if dataMatches(e.Digest, text) || len(text) > 0 && text[len(text)-1] == 0 && dataMatches(e.Digest, text[:len(text)-1]) {
			continue
		}
		return fmt.Errorf("event %d (EV_IPL, PCR %d, %q): its text does not hash to its replayed digest (the data was changed)", i, e.Index, trunc(string(e.Data)))
	}
	return nil
}

// evIPL is EV_IPL, the event type boot loaders measure their strings and
// files with.
const evIPL = 0x0000000d

// grubPrefixes start the strings grub measures into PCR 8 (the GRUB
// manual's "Measured Boot", and the older prefixes of distributions' TPM
// patches); the digest is over the text after the prefix.
var grubPrefixes = []string{"grub_cmd: ", "kernel_cmdline: ", "module_cmdline: ", "grub_kernel_cmdline ", "grub_cmd "}

// GrubString splits a PCR 8 EV_IPL event that grub measured into its
// prefix and the text the digest covers; ok is false for any other event.
func GrubString(e *attest.Event) (text []byte, prefix string, ok bool) {
	if e.Index != 8 || uint32(e.Type) != evIPL {
		return nil, "", false
	}
	for _, p := range grubPrefixes {
		if t, found := bytes.CutPrefix(e.Data, []byte(p)); found {
			return t, p, true
		}
	}
	return nil, "", false
}

// dataMatches says whether data hashes to digest, whose length says the
// algorithm (SHA-256, SHA-384 or SHA-1).
func dataMatches(digest, data []byte) bool {
	var h crypto.Hash
	switch len(digest) {
	case crypto.SHA256.Size():
		h = crypto.SHA256
	case crypto.SHA384.Size():
		h = crypto.SHA384
	case crypto.SHA1.Size():
		h = crypto.SHA1
	default:
		return false
	}
	w := h.New()
	w.Write(data)
	return subtle.ConstantTimeCompare(w.Sum(nil), digest) == 1
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
