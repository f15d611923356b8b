package policy

import (
	"fmt"
	"strings"
)

// MaxCmdlineLen is the longest kernel command line Bulwark accepts: the
// kernel's COMMAND_LINE_SIZE on x86 (2048) less its NUL. The kernel copies
// at most that much and silently drops the rest, which could cut a
// parameter into a different one.
const MaxCmdlineLen = 2047

// CheckCmdline says why the guest kernel could read command line s
// differently from ParseCmdline, or returns nil. It refuses every byte
// that is not printable ASCII or the space: NUL (the kernel stops reading
// there), tab, newline and the other control bytes (some kernel parsers
// split on them), bytes 0x80-0xff (the kernel's isspace counts 0xa0 as a
// space), DEL, and the double quote (lib/cmdline.c groups quoted text
// into one parameter and strips the quotes; the x86 early parsers do not
// know quotes at all). It also refuses lines longer than MaxCmdlineLen.
// launch.Run checks a command line with it before booting, and policy
// evaluation denies a launch event whose command line fails it.
func CheckCmdline(s string) error {
	if len(s) > MaxCmdlineLen {
		return fmt.Errorf("kernel command line is %d bytes; the kernel keeps at most %d and drops the rest", len(s), MaxCmdlineLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c < 0x7f && c != '"' {
			continue
		}
		var why string
		switch {
		case c == 0:
			why = "the kernel stops reading at a NUL"
		case c == '"':
			why = "quotes change how the kernel splits parameters, and not every kernel parser honours them"
		case c >= 0x09 && c <= 0x0d || c == 0xa0:
			why = "the kernel splits parameters on it; separate parameters with spaces"
		default:
			why = "only printable ASCII and the space are allowed"
		}
		return fmt.Errorf("kernel command line byte %d is %q: %s", i, s[i:i+1], why)
	}
	return nil
}

// ParseCmdline splits a kernel command line into parameters exactly as the
// kernel does (lib/cmdline.c next_arg, and the x86 early parsers), after
// CheckCmdline has accepted it: on runs of spaces, the only separator left.
// A differential fuzz test (FuzzCmdlineMatchesKernel) holds it to a port of
// the kernel's own code. "--" and the init arguments after it are returned
// like any other parameter.
func ParseCmdline(s string) ([]string, error) {
	if err := CheckCmdline(s); err != nil {
		return nil, err
	}
	var out []string
	for _, p := range strings.Split(s, " ") {
		if p != "" {
			out = append(out, p)
		}
	}
	return out, nil
}

// wildcardRefused lists the parameter keys that a "key=*" allow pattern
// may not name, because some value of theirs changes what the guest kernel
// runs, what it prints or where, or how well it defends itself. A policy
// that allows one must spell out the exact value ("init=/sbin/init").
// Keys are compared as the kernel compares parameter names, with '-' and
// '_' equal; an entry ending in '*' is a prefix. Any key with a '.' (a
// module parameter, and sysctl.*, printk.*, MODULE.dyndbg) is refused too.
// The list cannot be complete (the kernel has over a thousand parameters):
// it keeps wildcards away from the known ways in, and docs/policy.md
// recommends exact values everywhere. A test keeps docs/policy.md in step.
var wildcardRefused = []string{
	// what runs
	"init*", "rdinit", "root*", "nfsroot", "ip", "bootconfig", "module_blacklist",
	"kexec*", "crash*",
	// tracing and debugging, which can read any memory
	"kprobe*", "uprobe*", "trace*", "tracing*", "ftrace*", "tp_printk*", "alloc_snapshot",
	"kgdb*", "ekgdboc", "kdb*", "dyndbg", "debug*", "slub_debug", "slab_debug", "page_owner",
	"kfence*", "kasan*",
	// what is printed, and where
	"console*", "netconsole", "early*", "keep_bootcon", "ignore_loglevel", "log_buf_len",
	"printk*", "panic_*", "oops*", "sysrq*",
	// memory, firmware and security
	"mem*", "efi*", "lsm", "security", "selinux", "apparmor", "ima*", "evm*", "lockdown",
	"mitigations", "pti", "spectre*", "nospec*",
}

// wildcardRefusal says why "key=*" may not be an allow pattern, or "".
func wildcardRefusal(key string) string {
	k := strings.ReplaceAll(key, "-", "_")
	if strings.Contains(k, ".") {
		return "names a module parameter (MODULE.PARAM)"
	}
	for _, d := range wildcardRefused {
		if prefix, ok := strings.CutSuffix(d, "*"); ok && strings.HasPrefix(k, prefix) || k == d {
			return "names a parameter that can change what the kernel runs or prints"
		}
	}
	return ""
}

// checkParamPattern says what is wrong with a parameter pattern, or "".
// allow is true for allow patterns, which may not be wildcards for the
// keys of wildcardRefused.
func checkParamPattern(p string, allow bool) string {
	switch {
	case p == "":
		return "is empty"
	case strings.ContainsAny(p, " \t\n\v\f\r"):
		return "contains whitespace; give one parameter per pattern"
	case strings.HasPrefix(p, "="):
		return "has no key before '='"
	}
	if err := CheckCmdline(p); err != nil {
		return "can never match: " + strings.TrimPrefix(err.Error(), "kernel command line ")
	}
	key, val, hasEq := strings.Cut(p, "=")
	if strings.Contains(key, "*") || (hasEq && val != "*" && strings.Contains(val, "*")) {
		return "uses '*' other than as a whole value ('key=*'); wildcards are not globs"
	}
	if allow && hasEq && val == "*" {
		if why := wildcardRefusal(key); why != "" {
			return why + "; a wildcard may not allow it: list the exact values (" + key + "=VALUE)"
		}
	}
	return ""
}

// matchParam reports whether command line parameter tok matches pattern
// pat. A wildcard never matches a key of wildcardRefused, even in a
// pattern that did not come through Parse.
func matchParam(pat, tok string) bool {
	key, val, hasEq := strings.Cut(pat, "=")
	if hasEq && val == "*" {
		tkey, _, tEq := strings.Cut(tok, "=")
		return tEq && tkey == key && wildcardRefusal(key) == ""
	}
	return pat == tok
}

// patternCovers reports whether every parameter matching req also matches allow.
func patternCovers(allow, req string) bool {
	if allow == req {
		return true
	}
	akey, aval, aEq := strings.Cut(allow, "=")
	rkey, _, rEq := strings.Cut(req, "=")
	return aEq && aval == "*" && rEq && akey == rkey
}
