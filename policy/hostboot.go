package policy

import (
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// SecureBootRule is a policy's requirement on the host's UEFI Secure Boot
// state, judged from the host's firmware event log (attestd replays it
// against the quoted PCRs 0-7 and checks the variable data against its
// digests before policy sees it). It survives what a PCR 7 pin does not: a
// dbx update, a new shim signed by the same CA.
type SecureBootRule struct {
	// Enabled requires the SecureBoot variable to be 1 with its keys
	// enrolled (PK, KEK, db) and no debugger attached.
	Enabled bool
	// Authorities, when set, are the only certificates (SHA-256 of their DER,
	// "sha256:<hex>") that may have verified a boot component: every
	// EV_EFI_VARIABLE_AUTHORITY event in the log must name one of them, and
	// there must be at least one ("any shim signed by this CA").
	Authorities []string
	// MinDBXEntries requires the forbidden-signature database (dbx) to hold
	// at least this many entries (hashes and certificates): "dbx at least
	// this version". 0: no requirement.
	MinDBXEntries int
}

// Firmware is what attestd learnt from the host's firmware event log, for
// policy: verified (replayed to the quoted PCRs, variable data bound to the
// digests) before policy sees it. Nil in Evidence: no log was sent.
type Firmware struct {
	// SecureBoot is true when the log shows Secure Boot enabled and its
	// state parses completely (Err is empty).
	SecureBoot bool
	// Authorities are "sha256:<hex>" of the certificates that verified boot
	// components (EV_EFI_VARIABLE_AUTHORITY), in log order, without repeats.
	Authorities []string
	// DBXEntries counts dbx's forbidden hashes and certificates.
	DBXEntries int
	// PK, KEK, DB and DBX list the Secure Boot databases as measured:
	// "sha256:<hex>" of each certificate's DER, and each hash entry as
	// "sha256:<hex>" (the hash it holds).
	PK, KEK, DB, DBX []string
	// BootApps are the digests of the boot applications the firmware
	// loaded (EV_EFI_BOOT_SERVICES_APPLICATION in PCR 4: shim, the boot
	// loader, a UKI), in order, as "sha256:<hex>" of their Authenticode hash.
	BootApps []string
	// Events are the replayed, checked events of PCRs 0-7, for CEL.
	Events []FirmwareEvent
	// Err says why the Secure Boot state could not be read from the log
	// (e.g. Secure Boot off without its variables); "" when it could.
	Err string
}

// FirmwareEvent is one verified firmware event, as CEL sees it.
type FirmwareEvent struct {
	PCR    int    // 0-7
	Type   string // e.g. "EV_EFI_VARIABLE_DRIVER_CONFIG"
	Digest string // the SHA-256 bank's digest, "sha256:<hex>"
	Data   []byte // the event data (bounded by the log's size limit)
}

// hostSecureBoot parses host.secure_boot.
func (p *parser) hostSecureBoot(n *yaml.Node, pol *Policy) {
	f := p.mapping(n, "host.secure_boot", "enabled", "authorities", "min_dbx_entries")
	if f == nil {
		return
	}
	r := &SecureBootRule{}
	if v, ok := f["enabled"]; ok {
		if v.val.Kind != yaml.ScalarNode || v.val.ShortTag() != "!!bool" {
			p.errAt(v.val, "write 'enabled: true', or remove it", "host.secure_boot.enabled: expected true or false, got %s", kindName(v.val))
		} else {
			r.Enabled = v.val.Value == "true"
			if !r.Enabled {
				p.errAt(v.val, "write 'enabled: true' to require Secure Boot; a policy cannot require it off", "host.secure_boot.enabled: false requires nothing")
			}
		}
	}
	if v, ok := f["authorities"]; ok {
		r.Authorities = p.digestList(v.val, "host.secure_boot.authorities")
		if len(r.Authorities) == 0 {
			p.errAt(v.val, "list the SHA-256 of each certificate allowed to verify boot components (a deny reason names the certificate a host used)", "host.secure_boot.authorities: no certificate listed")
		}
		for _, a := range r.Authorities {
			if !strings.HasPrefix(a, "sha256:") {
				p.errAt(v.val, "certificates are named by the SHA-256 of their DER", "host.secure_boot.authorities: %q is not a sha256 digest", truncate(a, 80))
			}
		}
	}
	if v, ok := f["min_dbx_entries"]; ok {
		k, err := strconv.Atoi(v.val.Value)
		if v.val.Kind != yaml.ScalarNode || v.val.ShortTag() != "!!int" || err != nil || k < 1 || k > 1<<20 {
			p.errAt(v.val, "a whole number of dbx entries, 1 or more", "host.secure_boot.min_dbx_entries: %q is not a count", truncate(v.val.Value, 20))
		} else {
			r.MinDBXEntries = k
		}
	}
	if !r.Enabled && len(r.Authorities) == 0 && r.MinDBXEntries == 0 {
		p.errAt(n, "add 'enabled: true', 'authorities: [...]' or 'min_dbx_entries: N', or remove secure_boot", "host.secure_boot: requires nothing")
	}
	pol.SecureBoot = r
}

// secureBoot judges the host's firmware state against the policy's rule.
func (e *evaluation) secureBoot() {
	r := e.pol.SecureBoot
	if r == nil {
		return
	}
	fw := e.ev.Firmware
	if fw == nil {
		e.deny("host: no firmware event log was sent, and the policy requires Secure Boot state (a host with a hardware TPM sends /sys/kernel/security/tpm0/binary_bios_measurements)")
		return
	}
	if fw.Err != "" && (r.Enabled || len(r.Authorities) > 0 || r.MinDBXEntries > 0) {
		e.deny("host: Secure Boot state cannot be read from the firmware event log: %s", fw.Err)
		return
	}
	if r.Enabled && !fw.SecureBoot {
		e.deny("host: Secure Boot is off, and the policy requires it on")
	}
	if len(r.Authorities) > 0 {
		if len(fw.Authorities) == 0 {
			e.deny("host: no boot component was verified by a Secure Boot authority; the policy requires one of %s", strings.Join(r.Authorities, ", "))
		}
		for _, a := range fw.Authorities {
			if !slices.Contains(r.Authorities, a) {
				e.deny("host: a boot component was verified by certificate %s, which is not one of the policy's authorities", a)
			}
		}
	}
	if r.MinDBXEntries > 0 && fw.DBXEntries < r.MinDBXEntries {
		e.deny("host: dbx holds %d entries, the policy requires at least %d (apply the firmware's dbx update)", fw.DBXEntries, r.MinDBXEntries)
	}
}

// firmwareClaims are the CEL variables of the host's firmware state.
func firmwareClaims(fw *Firmware) map[string]any {
	if fw == nil {
		fw = &Firmware{}
	}
	list := func(l []string) []string { return append([]string{}, l...) }
	events := make([]map[string]any, 0, len(fw.Events))
	for _, e := range fw.Events {
		events = append(events, map[string]any{"pcr": int64(e.PCR), "type": e.Type, "digest": e.Digest, "data": append([]byte{}, e.Data...)})
	}
	return map[string]any{
		"present":     fw.Events != nil || fw.Err != "" || fw.SecureBoot,
		"secure_boot": fw.SecureBoot,
		"authorities": list(fw.Authorities),
		"dbx_entries": int64(fw.DBXEntries),
		"pk":          list(fw.PK),
		"kek":         list(fw.KEK),
		"db":          list(fw.DB),
		"dbx":         list(fw.DBX),
		"boot_apps":   list(fw.BootApps),
		"events":      events,
		"error":       fw.Err,
	}
}
