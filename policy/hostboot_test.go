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
