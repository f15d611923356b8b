package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/measure"
)

func TestSecureBootRule(t *testing.T) {
	const ca = "sha256:48e99b991f57fc52f76149599bff0a58c47154229b9f8d603ac40d3500248507"
	doc := minimal + "host:\n  secure_boot:\n    enabled: true\n    authorities: [" + ca + "]\n    min_dbx_entries: 10\n"
	p, err := Parse("t.yaml", []byte(doc), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := p.SecureBoot; r == nil || !r.Enabled || len(r.Authorities) != 1 || r.Authorities[0] != ca || r.MinDBXEntries != 10 || len(p.HostPCRs) != 0 {
		t.Fatalf("parsed %+v", p.SecureBoot)
	}
	ev := Evidence{Event: measure.LaunchEvent{Policy: "t", Kernel: dA, Cmdline: "console=ttyS0", CmdlineDigest: measure.DigestCmdline(measure.SHA256, "console=ttyS0")}}
	for _, tc := range []struct {
		name string
		fw   *Firmware
		want string
	}{
		{"all met", &Firmware{SecureBoot: true, Authorities: []string{ca}, DBXEntries: 10}, ""},
		{"state unreadable", &Firmware{Err: "event 4: SecureBoot data len is 0"}, "cannot be read from the firmware event log: event 4"},
		{"off", &Firmware{Authorities: []string{ca}, DBXEntries: 10}, "Secure Boot is off"},
		{"no authority", &Firmware{SecureBoot: true, DBXEntries: 10}, "no boot component was verified"},
		{"old dbx", &Firmware{SecureBoot: true, Authorities: []string{ca}, DBXEntries: 9}, "dbx holds 9 entries"},
		{"no log", nil, "no firmware event log was sent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := ev
			e.Firmware = tc.fw
			v := p.Evaluate(context.Background(), e)
			got := strings.Join(v.Reasons, "\n")
			if tc.want == "" != v.Allow || !strings.Contains(got, tc.want) {
				t.Fatalf("allow %v reasons %q, want %q", v.Allow, got, tc.want)
			}
		})
	}
	// CEL sees the firmware state.
	rule := minimal + "rules:\n  - name: sb\n    expr: firmware.present && firmware.secure_boot && firmware.dbx_entries >= 10\n"
	p, err = Parse("t.yaml", []byte(rule), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := ev
	e.Firmware = &Firmware{SecureBoot: true, DBXEntries: 10}
	if v := p.Evaluate(context.Background(), e); !v.Allow {
		t.Fatalf("CEL rule over firmware denied: %v", v.Reasons)
	}
	e.Firmware = nil
	if v := p.Evaluate(context.Background(), e); v.Allow {
		t.Fatal("CEL rule allowed a launch with no firmware log")
	}
}

// TestHostKernelCmdlineRule judges the host kernel command line read from
// the firmware event log: required and forbidden parameters, keys compared
// as the kernel compares them, and a line that is unknown (no log, PCRs 8
// and 9 not quoted, none measured) denies.
func TestHostKernelCmdlineRule(t *testing.T) {
	doc := minimal + "host:\n  kernel_cmdline:\n    require: [lockdown=integrity, \"root=*\", ro]\n    forbid: [init, nokaslr, \"kgdboc=*\", module.sig_enforce=0]\n"
	p, err := Parse("t.yaml", []byte(doc), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := p.KernelCmdline; r == nil || len(r.Require) != 3 || len(r.Forbid) != 4 {
		t.Fatalf("parsed %+v", p.KernelCmdline)
	}
	ev := Evidence{Event: measure.LaunchEvent{Policy: "t", Kernel: dA, Cmdline: "console=ttyS0", CmdlineDigest: measure.DigestCmdline(measure.SHA256, "console=ttyS0")}}
	const good = "/boot/vmlinuz-6.1 root=/dev/sda1 ro lockdown=integrity quiet"
	fw := func(line string) *Firmware {
		return &Firmware{Events: []FirmwareEvent{}, BootLoaderQuoted: true, KernelCmdline: line}
	}
	for _, tc := range []struct {
		name string
		fw   *Firmware
		want string
	}{
		{"all met", fw(good), ""},
		{"required flag has a value", fw(good + " ro=1"), ""},
		{"required missing", fw("/boot/vmlinuz root=/dev/sda1 ro"), `lacks "lockdown=integrity"`},
		{"required flag only with a value", fw("/boot/vmlinuz root=/dev/sda1 ro=0 lockdown=integrity"), `lacks "ro"`},
		{"forbidden bare key, with a value", fw(good + " init=/bin/sh"), `has "init=/bin/sh", which the policy forbids (pattern "init")`},
		{"forbidden flag", fw(good + " nokaslr"), `has "nokaslr"`},
		{"forbidden wildcard", fw(good + " kgdboc=ttyS0"), `has "kgdboc=ttyS0"`},
		{"forbidden value, dash for underscore", fw(good + " module.sig-enforce=0"), `has "module.sig-enforce=0"`},
		{"other value of a forbidden key=value", fw(good + " module.sig_enforce=1"), ""},
		{"cannot be split as the kernel does", fw(good + " \"a b\""), "cannot be judged"},
		{"none measured", fw(""), "measured no kernel command line"},
		{"PCRs 8 and 9 not quoted", &Firmware{Events: []FirmwareEvent{}}, "PCRs 8 and 9 were not quoted"},
		{"no log", nil, "no firmware event log was sent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := ev
			e.Firmware = tc.fw
			v := p.Evaluate(context.Background(), e)
			got := strings.Join(v.Reasons, "\n")
			if tc.want == "" != v.Allow || !strings.Contains(got, tc.want) {
				t.Fatalf("allow %v reasons %q, want %q", v.Allow, got, tc.want)
			}
		})
	}
	// CEL sees the line.
	rule := minimal + "rules:\n  - name: cmd\n    expr: firmware.boot_loader_quoted && firmware.kernel_cmdline.contains(\"lockdown=integrity\")\n"
	p, err = Parse("t.yaml", []byte(rule), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := ev
	e.Firmware = fw(good)
	if v := p.Evaluate(context.Background(), e); !v.Allow {
		t.Fatalf("CEL rule over the host kernel command line denied: %v", v.Reasons)
	}
	e.Firmware = nil
	if v := p.Evaluate(context.Background(), e); v.Allow {
		t.Fatal("CEL rule allowed a launch with no firmware log")
	}
}
