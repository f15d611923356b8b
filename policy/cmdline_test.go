package policy

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/measure"
)

// This file holds a Go port of how the guest kernel splits its command
// line, and holds ParseCmdline to it. The port follows the kernel's code
// line by line, so that a difference between the two is a bug in
// ParseCmdline and not in a re-reading of the kernel's intent:
//
//   - lib/ctype.c: _ctype[] marks 0x09-0x0d, 0x20 and 0xa0 as space (_S);
//     include/linux/ctype.h: isspace(c) is (_ctype[c] & _S).
//   - lib/string.c skip_spaces: skip while isspace.
//   - lib/cmdline.c next_arg: one parameter, quotes and all.
//   - kernel/params.c parse_args: skip_spaces, then next_arg while *args.
//     (At "--" parse_args stops and init/main.c hands the rest to init,
//     split by the same next_arg; the policy matches those too, so the
//     list compared here runs to the end of the line.)
//   - The boot loader (QEMU: -append, PVH start_info or the setup header)
//     passes a NUL-terminated string and the kernel copies at most
//     COMMAND_LINE_SIZE bytes including the NUL (x86: 2048).
//   - arch/x86/lib/cmdline.c and arch/x86/boot/cmdline.c, which find early
//     options (nokaslr, earlyprintk, mem=...) before parse_args runs, count
//     any byte <= ' ' as space and know no quotes (earlyWords).

// commandLineSize is x86's COMMAND_LINE_SIZE.
const commandLineSize = 2048

// kernelIsSpace is isspace() over lib/ctype.c's table.
func kernelIsSpace(c byte) bool {
	return c >= 0x09 && c <= 0x0d || c == 0x20 || c == 0xa0
}

// kernelSkipSpaces is lib/string.c skip_spaces over a NUL-terminated buf.
func kernelSkipSpaces(buf []byte, i int) int {
	for kernelIsSpace(buf[i]) {
		i++
	}
	return i
}

// cString is the NUL-terminated string at the start of b.
func cString(b []byte) string {
	if n := slices.Index(b, 0); n >= 0 {
		return string(b[:n])
	}
	return string(b)
}

// kernelNextArg is lib/cmdline.c next_arg: it writes NULs into buf as the
// kernel writes into its copy of the command line, and returns the offset
// of the next parameter, this one's name and its value (nil: no '=').
func kernelNextArg(buf []byte, args int) (next int, param string, val *string) {
	var i, equals int
	inQuote, quoted := false, false
	if buf[args] == '"' {
		args++
		inQuote, quoted = true, true
	}
	for i = 0; buf[args+i] != 0; i++ {
		if kernelIsSpace(buf[args+i]) && !inQuote {
			break
		}
		if equals == 0 {
			if buf[args+i] == '=' {
				equals = i
			}
		}
		if buf[args+i] == '"' {
			inQuote = !inQuote
		}
	}
	valAt := -1
	if equals != 0 {
		buf[args+equals] = 0
		valAt = args + equals + 1
		// Don't include quotes in value.
		if buf[valAt] == '"' {
			valAt++
			if buf[args+i-1] == '"' {
				buf[args+i-1] = 0
			}
		}
	}
	if quoted && buf[args+i-1] == '"' { // i == 0: args-1 is the opening quote
		buf[args+i-1] = 0
	}
	if buf[args+i] != 0 {
		buf[args+i] = 0
		next = args + i + 1
	} else {
		next = args + i
	}
	param = cString(buf[args:])
	if valAt >= 0 {
		v := cString(buf[valAt:])
		val = &v
	}
	return kernelSkipSpaces(buf, next), param, val
}

// kernelParams is the list of parameters the guest kernel reads from the
// command line the launcher passes, each as "param" or "param=value".
func kernelParams(cmdline string) []string {
	buf := []byte(cmdline)
	if n := slices.Index(buf, 0); n >= 0 {
		buf = buf[:n]
	}
	if len(buf) > commandLineSize-1 {
		buf = buf[:commandLineSize-1]
	}
	buf = append(buf, 0)
	var out []string
	args := kernelSkipSpaces(buf, 0)
	for buf[args] != 0 {
		var param string
		var val *string
		args, param, val = kernelNextArg(buf, args)
		if val != nil {
			param += "=" + *val
		}
		out = append(out, param)
	}
	return out
}

// earlyWords is the words the x86 early option finders see: runs of bytes
// above ' ', up to a NUL or COMMAND_LINE_SIZE.
func earlyWords(cmdline string) []string {
	if n := strings.IndexByte(cmdline, 0); n >= 0 {
		cmdline = cmdline[:n]
	}
	if len(cmdline) > commandLineSize-1 {
		cmdline = cmdline[:commandLineSize-1]
	}
	var out []string
	start := -1
	for i := 0; i <= len(cmdline); i++ {
		if i == len(cmdline) || cmdline[i] <= ' ' {
			if start >= 0 {
				out = append(out, cmdline[start:i])
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	return out
}

// TestKernelPort pins the port to what the kernel's code does with the
// inputs that matter here, the reproduced attack among them.
func TestKernelPort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  a  b ", []string{"a", "b"}},
		{"loglevel=8\xc2\xa0kprobe_event=p:vfs_write", []string{"loglevel=8\xc2", "kprobe_event=p:vfs_write"}},
		{"a\tb\nc\vd\fe\rf", []string{"a", "b", "c", "d", "e", "f"}},
		{"a\x1cb \x7f", []string{"a\x1cb", "\x7f"}},
		{"quiet\x00 init=/bin/sh", []string{"quiet"}},
		{`foo="a b" bar`, []string{"foo=a b", "bar"}},
		{`"init=/bin/sh" quiet`, []string{"init=/bin/sh", "quiet"}},
		{`a="x init=/bin/sh`, []string{"a=x init=/bin/sh"}},
		{`a=b"c d"e f`, []string{`a=b"c d"e`, "f"}},
		{`"" x`, []string{"", "x"}},
		{`=a=b = a=`, []string{"=a=b", "=", "a="}},
		{strings.Repeat("a", commandLineSize-1) + "bc", []string{strings.Repeat("a", commandLineSize-1)}},
	} {
		if got := kernelParams(tc.in); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
			t.Errorf("kernelParams(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestParseCmdline: what the kernel would split differently is refused,
// the rest splits on spaces.
func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		refused string // substring of the error; "" means accepted
	}{
		{in: "", want: nil},
		{in: "console=ttyS0 panic=-1 reboot=t quiet loglevel=4 8250.nr_uarts=1", want: []string{"console=ttyS0", "panic=-1", "reboot=t", "quiet", "loglevel=4", "8250.nr_uarts=1"}},
		{in: "  a   b  ", want: []string{"a", "b"}},
		{in: "-- init args", want: []string{"--", "init", "args"}},
		{in: "a= =b ==", want: []string{"a=", "=b", "=="}},
		{in: "x=!#$%&'()*+,-./:;<>?@[\\]^_`{|}~", want: []string{"x=!#$%&'()*+,-./:;<>?@[\\]^_`{|}~"}},
		{in: strings.Repeat("q", MaxCmdlineLen), want: []string{strings.Repeat("q", MaxCmdlineLen)}},
		// The reproduced attack: one parameter to the old split, two to the kernel.
		{in: "loglevel=8\u00a0kprobe_event=p:vfs_write", refused: `byte 10 is "\xc2": only printable ASCII`},
		{in: "loglevel=8\xa0kprobe_event=x", refused: `byte 10 is "\xa0": the kernel splits parameters on it`},
		{in: "a\tb", refused: `byte 1 is "\t": the kernel splits`},
		{in: "a\nb", refused: `byte 1 is "\n"`},
		{in: "a\vb\fc\rd", refused: `byte 1 is "\v"`},
		{in: "quiet\x00init=/bin/sh", refused: "byte 5 is \"\\x00\": the kernel stops reading at a NUL"},
		{in: "a\x1cb", refused: `only printable ASCII`},
		{in: "a\x7f", refused: `only printable ASCII`},
		{in: "console=tty\u00e9", refused: `byte 11 is "\xc3"`},
		{in: `foo="a init=/bin/sh"`, refused: `byte 4 is "\"": quotes change how the kernel splits`},
		{in: `"init=/bin/sh"`, refused: `byte 0 is "\""`},
		{in: `a="unbalanced b`, refused: `byte 2 is "\""`},
		{in: strings.Repeat("q", MaxCmdlineLen+1), refused: "is 2048 bytes; the kernel keeps at most 2047"},
	} {
		got, err := ParseCmdline(tc.in)
		if tc.refused != "" {
			if err == nil || !strings.Contains(err.Error(), tc.refused) {
				t.Errorf("ParseCmdline(%.40q) = %q, %v; want an error containing %q", tc.in, got, err, tc.refused)
			}
			continue
		}
		if err != nil || fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
			t.Errorf("ParseCmdline(%.40q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		if k := kernelParams(tc.in); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", k) {
			t.Errorf("ParseCmdline(%.40q) = %q, but the kernel reads %q", tc.in, got, k)
		}
	}
}

// FuzzCmdlineMatchesKernel is the differential test: for every input,
// ParseCmdline either refuses it or returns exactly the parameters the
// kernel's own splitting (kernelParams) and the x86 early finders
// (earlyWords) read from it.
func FuzzCmdlineMatchesKernel(f *testing.F) {
	for _, s := range []string{
		"", "console=ttyS0 panic=-1 reboot=t quiet loglevel=4 8250.nr_uarts=1 tsc_early_khz=2400000",
		"loglevel=8\u00a0kprobe_event=p:vfs_write", "a\tb\nc", `foo="a b" c`, `"x`, "q\x00init=/bin/sh",
		"-- a b", " = == a= ", strings.Repeat("ab ", 700), "\x85\x1c\x1f\x7f\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseCmdline(s)
		if err != nil {
			if CheckCmdline(s) == nil {
				t.Fatalf("ParseCmdline(%q) refused what CheckCmdline accepts: %v", s, err)
			}
			return
		}
		if k := kernelParams(s); !slices.Equal(got, k) {
			t.Fatalf("ParseCmdline(%q) = %q, the kernel reads %q", s, got, k)
		}
		if w := earlyWords(s); !slices.Equal(got, w) {
			t.Fatalf("ParseCmdline(%q) = %q, the x86 early finders read %q", s, got, w)
		}
	})
}

// TestWildcardRefused: a 'key=*' allow pattern may not name a parameter
// that can change what the kernel runs or prints; exact values may.
func TestWildcardRefused(t *testing.T) {
	for _, tc := range []struct {
		pat, refused string
	}{
		{"kprobe_event=*", "can change what the kernel runs or prints"},
		{"kprobe-event=*", "can change what the kernel runs or prints"},
		{"trace_event=*", "can change"},
		{"trace_buf_size=*", "can change"},
		{"ftrace_filter=*", "can change"},
		{"init=*", "can change"},
		{"rdinit=*", "can change"},
		{"initcall_blacklist=*", "can change"},
		{"console=*", "can change"},
		{"earlyprintk=*", "can change"},
		{"dyndbg=*", "can change"},
		{"panic_print=*", "can change"},
		{"8250.nr_uarts=*", "module parameter"},
		{"modprobe.blacklist=*", "module parameter"},
		{"sysctl.kernel.panic=*", "module parameter"},
		{"foo.dyndbg=*", "module parameter"},
		{"loglevel=*", ""},
		{"panic=*", ""},
		{"tsc_early_khz=*", ""},
		{"bulwark_mode=*", ""},
		{"kprobe_event=p:do_sys_open", ""},
		{"init=/sbin/init", ""},
		{"8250.nr_uarts=1", ""},
		{"initcall_debug", ""},
	} {
		got := checkParamPattern(tc.pat, true)
		if tc.refused == "" && got != "" || tc.refused != "" && !strings.Contains(got, tc.refused) {
			t.Errorf("checkParamPattern(%q) = %q, want %q", tc.pat, got, tc.refused)
		}
		if tc.refused != "" {
			if got := checkParamPattern(tc.pat, false); got != "" {
				t.Errorf("require pattern %q refused: %s", tc.pat, got)
			}
			// Defence in depth: a Policy built without Parse matches nothing either.
			key, _, _ := strings.Cut(tc.pat, "=")
			if matchParam(tc.pat, key+"=x") {
				t.Errorf("matchParam(%q, %q) matched", tc.pat, key+"=x")
			}
		}
	}
}

// TestDocsListWildcardRefusals keeps docs/policy.md in step with wildcardRefused.
func TestDocsListWildcardRefusals(t *testing.T) {
	doc, err := os.ReadFile("../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range wildcardRefused {
		if !strings.Contains(string(doc), "`"+d+"`") {
			t.Errorf("docs/policy.md does not list `%s`", d)
		}
	}
}

// TestReferenceDefaultsAdmitNothingDangerous: the params rule that
// 'launcher policy init' writes names exact values; the one wildcard is
// tsc_early_khz, and nothing on the wildcard refusal list gets through.
func TestReferenceDefaultsAdmitNothingDangerous(t *testing.T) {
	out, err := Reference(ReferenceValues{Name: "d", Kernel: dA})
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse("d.yaml", out, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, pat := range p.Cmdline.Params.Allow {
		if strings.HasSuffix(pat, "=*") && pat != "tsc_early_khz=*" {
			t.Errorf("default allow pattern %q is a wildcard", pat)
		}
	}
	set, err := NewSet(p)
	if err != nil {
		t.Fatal(err)
	}
	base := "console=ttyS0 panic=-1 reboot=t quiet loglevel=4 8250.nr_uarts=1"
	eval := func(c string) Verdict {
		return set.Evaluate(context.Background(), Evidence{Event: measure.LaunchEvent{Policy: "d", Kernel: dA, Cmdline: c}})
	}
	for _, c := range []string{base, base + " tsc_early_khz=2400000 tsc=reliable"} {
		if v := eval(c); !v.Allow {
			t.Errorf("default command line %q denied: %q", c, v.Reasons)
		}
	}
	for _, extra := range []string{
		"kprobe_event=p:vfs_write", "trace_event=syscalls", "ftrace=function", "trace_buf_size=1M",
		"init=/bin/sh", "rdinit=/bin/sh", "8250.nr_uarts=4", "modprobe.blacklist=x", "dyndbg=+p",
		"earlyprintk=ttyS0", "console=tty0", "initcall_blacklist=x", "loglevel=8", "panic=0",
		"reboot=k", "ignore_loglevel", "initcall_debug", "tsc_early_khz", "--",
		"loglevel=4\u00a0kprobe_event=p:vfs_write",
	} {
		if v := eval(base + " " + extra); v.Allow {
			t.Errorf("the default params rule allows %q", extra)
		}
	}
}

// TestEvaluateCmdlineRefusals: a launch event whose command line the
// kernel would split differently is denied before any rule is applied,
// even by a policy whose wildcard would match it as one parameter (the
// old default 'loglevel=*'), and by an exact rule.
func TestEvaluateCmdlineRefusals(t *testing.T) {
	params, err := Parse("p.yaml", []byte(strings.Replace(minimal, `  exact: ["console=ttyS0"]`,
		"  params:\n    allow: [console=ttyS0, \"loglevel=*\", \"x=*\"]", 1)), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	exact, err := Parse("e.yaml", []byte(strings.Replace(strings.Replace(minimal, "name: t", "name: e", 1),
		`["console=ttyS0"]`, `["console=ttyS0 loglevel=8"]`, 1)), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	set, err := NewSet(params, exact)
	if err != nil {
		t.Fatal(err)
	}
	for _, pol := range []string{"t", "e"} {
		if v := set.Evaluate(context.Background(), Evidence{Event: measure.LaunchEvent{Policy: pol, Kernel: dA, Cmdline: "console=ttyS0 loglevel=8"}}); !v.Allow {
			t.Fatalf("policy %s denies the plain command line: %q", pol, v.Reasons)
		}
	}
	for _, tc := range []struct{ cmdline, reason string }{
		{"console=ttyS0 loglevel=8\u00a0kprobe_event=p:vfs_write", `byte 24 is "\xc2"`},
		{"console=ttyS0 loglevel=8\tkprobe_event=p:vfs_write", `byte 24 is "\t"`},
		{"console=ttyS0 loglevel=8\nkprobe_event=p:vfs_write", `byte 24 is "\n"`},
		{"console=ttyS0 loglevel=8\x00 kprobe_event=p:vfs_write", `byte 24 is "\x00"`},
		{`console=ttyS0 x="a kprobe_event=p:vfs_write"`, `byte 16 is "\""`},
		{"console=ttyS0 loglevel=" + strings.Repeat("8", MaxCmdlineLen), "is 2070 bytes; the kernel keeps at most 2047"},
	} {
		for _, pol := range []string{"t", "e"} {
			ev := measure.LaunchEvent{Policy: pol, Kernel: dA, Cmdline: tc.cmdline, CmdlineDigest: measure.DigestCmdline(measure.SHA256, tc.cmdline)}
			v := set.Evaluate(context.Background(), Evidence{Event: ev})
			if v.Allow || len(v.Reasons) != 1 || !strings.Contains(v.Reasons[0], "refused: kernel command line "+tc.reason) {
				t.Errorf("policy %s, %.50q: allow %v, reasons %q; want one refusal containing %q", pol, tc.cmdline, v.Allow, v.Reasons, tc.reason)
			}
		}
	}
}
