package policy

import (
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// SecureBootRule is a policy's requirement on the host's UEFI Secure Boot
// state, judged from the host's firmware event log (attestd replays it
// against the quoted PCRs 0-9 and checks the variable data against its
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
	// BootLoaderQuoted is true when PCRs 8 and 9 were quoted beside the
	// log and its events for them replayed: only then does the log say what
	// the boot loader measured (a launcher that quotes PCRs 0-7 only leaves
	// KernelCmdline empty and this false).
	BootLoaderQuoted bool
	// KernelCmdline is the host kernel's command line as the boot loader
	// measured it into PCR 8 (grub's "kernel_cmdline: " event, its text
	// bound to the replayed digest): the linux command's arguments, the
	// kernel's path first. When grub measured several (a menu entry tried
	// after another), the last, which is the one it booted. "" when none
	// was measured or PCR 8 was not quoted.
	KernelCmdline string
	// Events are the replayed, checked events of the quoted PCRs 0-9, for
	// CEL.
	Events []FirmwareEvent
	// Err says why the Secure Boot state could not be read from the log
	// (e.g. Secure Boot off without its variables); "" when it could.
	Err string
}

// FirmwareEvent is one verified firmware event, as CEL sees it.
type FirmwareEvent struct {
	PCR    int    // 0-9
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
		// The host kernel's command line from PCR 8; "" when none was
		// measured or PCRs 8 and 9 were not quoted.
		"kernel_cmdline":     fw.KernelCmdline,
		"boot_loader_quoted": fw.BootLoaderQuoted,
	}
}

// HostCmdlineRule is a policy's requirement on the host kernel's command
// line, as the boot loader measured it into PCR 8 (Firmware.KernelCmdline).
// The line is split into parameters on spaces, as the kernel splits it
// (ParseCmdline). Patterns are those of the guest's cmdline.params:
// "flag", "key=value", "key=*"; keys compare as the kernel compares them,
// '-' and '_' alike.
type HostCmdlineRule struct {
	// Require: each pattern must be matched by some parameter
	// ("lockdown=integrity", "module.sig_enforce=1", "iommu=*").
	Require []string
	// Forbid: no parameter may match any pattern. A bare key forbids the
	// parameter with or without a value ("init" forbids "init" and
	// "init=/bin/sh"); "key=value" forbids that value only.
	Forbid []string
}

// hostKernelCmdline parses host.kernel_cmdline.
func (p *parser) hostKernelCmdline(n *yaml.Node, pol *Policy) {
	f := p.mapping(n, "host.kernel_cmdline", "require", "forbid")
	if f == nil {
		return
	}
	r := &HostCmdlineRule{}
	for _, k := range []string{"require", "forbid"} {
		v, ok := f[k]
		if !ok {
			continue
		}
		what := "host.kernel_cmdline." + k
		pats, nodes, ok := p.strList(v.val, what)
		if ok && len(pats) == 0 {
			p.errAt(v.val, "list at least one parameter pattern, or remove it", "%s: no pattern listed", what)
		}
		for i, pat := range pats {
			if msg := checkParamPattern(pat, false); msg != "" {
				p.errAt(nodes[i], "patterns are 'flag', 'key=value' or 'key=*'", "%s: pattern %q %s", what, truncate(pat, 80), msg)
			}
		}
		if k == "require" {
			r.Require = pats
		} else {
			r.Forbid = pats
		}
	}
	for _, req := range r.Require {
		for _, fb := range r.Forbid {
			if hostParamMatches(fb, req, false) {
				p.errAt(n, "remove it from one of the lists", "host.kernel_cmdline: %q is both required and forbidden, so every launch would be denied", req)
			}
		}
	}
	if len(r.Require) == 0 && len(r.Forbid) == 0 {
		p.errAt(n, "add 'require: [...]' or 'forbid: [...]', or remove kernel_cmdline", "host.kernel_cmdline: requires nothing")
	}
	pol.KernelCmdline = r
}

// paramKey is a parameter's key as the kernel compares it ('-' == '_').
func paramKey(k string) string { return strings.ReplaceAll(k, "-", "_") }

// hostParamMatches reports whether host command line parameter tok matches
// pattern pat: "key=*" any value of key, "key=value" exactly; a bare "key"
// matches only "key" when require, and "key" with or without a value when
// not (a forbid pattern).
func hostParamMatches(pat, tok string, require bool) bool {
	pkey, pval, pEq := strings.Cut(pat, "=")
	tkey, tval, tEq := strings.Cut(tok, "=")
	if paramKey(pkey) != paramKey(tkey) {
		return false
	}
	switch {
	case pEq && pval == "*":
		return tEq
	case pEq:
		return tEq && tval == pval
	case require:
		return !tEq
	}
	return true
}

// hostKernelCmdline judges the host kernel's command line.
func (e *evaluation) hostKernelCmdline() {
	r := e.pol.KernelCmdline
	if r == nil {
		return
	}
	fw := e.ev.Firmware
	switch {
	case fw == nil:
		e.deny("host: no firmware event log was sent, and the policy requires the host kernel command line (a host with a hardware TPM sends /sys/kernel/security/tpm0/binary_bios_measurements)")
		return
	case !fw.BootLoaderQuoted:
		e.deny("host: PCRs 8 and 9 were not quoted with the firmware event log, so the host kernel command line is unknown (update the launcher: it quotes them whenever it sends the log)")
		return
	case fw.KernelCmdline == "":
		e.deny("host: the boot loader measured no kernel command line into PCR 8 (grub with its tpm module measures one; other boot loaders may not), and the policy requires one")
		return
	}
	params, err := ParseCmdline(fw.KernelCmdline)
	if err != nil {
		e.deny("host: the host kernel command line %q cannot be judged: %v", truncate(fw.KernelCmdline, 200), err)
		return
	}
	for _, req := range r.Require {
		if !slices.ContainsFunc(params, func(tok string) bool { return hostParamMatches(req, tok, true) }) {
			e.deny("host: the host kernel command line lacks %q, which the policy requires (it is %q)", req, truncate(fw.KernelCmdline, 200))
		}
	}
	for _, tok := range params {
		for _, fb := range r.Forbid {
			if hostParamMatches(fb, tok, false) {
				e.deny("host: the host kernel command line has %q, which the policy forbids (pattern %q)", truncate(tok, 200), fb)
			}
		}
	}
}
