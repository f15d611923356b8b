package policy

import "strings"

// SplitCmdline splits a kernel command line into parameters the way the
// kernel does (lib/cmdline.c next_arg): whitespace separates parameters
// except inside double quotes, and quotes stay part of the parameter text.
func SplitCmdline(s string) []string {
	var out []string
	inQuote := false
	start := -1
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isSpace(c) && !inQuote {
			if start >= 0 {
				out = append(out, s[start:i])
				start = -1
			}
			continue
		}
		if start < 0 {
			start = i
		}
		if c == '"' {
			inQuote = !inQuote
		}
	}
	if start >= 0 {
		out = append(out, s[start:])
	}
	return out
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// checkParamPattern says what is wrong with a parameter pattern, or "".
func checkParamPattern(p string) string {
	switch {
	case p == "":
		return "is empty"
	case strings.IndexFunc(p, func(r rune) bool { return r < 0x80 && isSpace(byte(r)) }) >= 0:
		return "contains whitespace; give one parameter per pattern"
	case strings.HasPrefix(p, "="):
		return "has no key before '='"
	}
	key, val, hasEq := strings.Cut(p, "=")
	if strings.Contains(key, "*") || (hasEq && val != "*" && strings.Contains(val, "*")) {
		return "uses '*' other than as a whole value ('key=*'); wildcards are not globs"
	}
	return ""
}

// matchParam reports whether command line parameter tok matches pattern pat.
func matchParam(pat, tok string) bool {
	key, val, hasEq := strings.Cut(pat, "=")
	if hasEq && val == "*" {
		tkey, _, tEq := strings.Cut(tok, "=")
		return tEq && tkey == key
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
