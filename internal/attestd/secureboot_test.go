package attestd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/policy"
)

// TestSecureBootPolicy judges real firmware event logs (go-attestation's
// test data) against policies on the host's Secure Boot state, through the
// code attestd runs: replayFirmwareLog (replay to the quoted PCRs, data
// bound to digests), firmwareState, Evidence and policy evaluation. A log
// with Secure Boot on is admitted; logs with it off, a tampered SecureBoot
// variable, an authority the policy does not name, an old dbx or no log at
// all are refused with the reason.
func TestSecureBootPolicy(t *testing.T) {
	dir := firmwareTestdata(t)
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Skipf("test data missing: %v", err)
		}
		return b
	}
	sbOn := read("sb_cert_eventlog")
	sbOff := read("ubuntu_2104_shielded_vm_no_secure_boot_eventlog")
	const msCA = "sha256:48e99b991f57fc52f76149599bff0a58c47154229b9f8d603ac40d3500248507"
	const shimCA = "sha256:ed1fe72cb9ca31c9af5b757afcd733323d675825032e6ced7fe1ae9eb767998c"
	const other = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

	pol := func(host string) *policy.Policy {
		t.Helper()
		p, err := policy.Parse("sb.yaml", []byte(testPolicyYAML(testPolicyName, testKernel)+host), policy.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		log  []byte // nil: none sent
		host string
		want string // "" allowed, else a reason's substring
	}{
		{"on, required", sbOn, "host:\n  secure_boot:\n    enabled: true\n", ""},
		{"on, CAs and dbx as required", sbOn, "host:\n  secure_boot:\n    enabled: true\n    authorities: [" + msCA + ", " + shimCA + "]\n    min_dbx_entries: 77\n", ""},
		{"off, required", sbOff, "host:\n  secure_boot:\n    enabled: true\n", "host: Secure Boot is off"},
		{"on, an authority not named", sbOn, "host:\n  secure_boot:\n    authorities: [" + msCA + ", " + other + "]\n", "verified by certificate " + shimCA},
		{"on, dbx older than required", sbOn, "host:\n  secure_boot:\n    enabled: true\n    min_dbx_entries: 78\n", "dbx holds 77 entries, the policy requires at least 78"},
		{"no log sent", nil, "host:\n  secure_boot:\n    enabled: true\n", "no firmware event log was sent"},
		{"no requirement, no log", nil, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &judged{NodeID: "node", Time: time.Now()}
			if tc.log != nil {
				pcrs := replayedPCRs(t, tc.log)
				evs, err := replayFirmwareLog(tc.log, pcrs)
				if err != nil {
					t.Fatal(err)
				}
				v.HostPCRs, v.FirmwareEvents = pcrs, evs
			}
			ev := testEvent(t, testPolicyName, bytes.Repeat([]byte{1}, 32))
			v.Event = &ev
			verdict := pol(tc.host).Evaluate(context.Background(), v.policyEvidence(nil))
			got := strings.Join(verdict.Reasons, "\n")
			if tc.want == "" {
				if !verdict.Allow {
					t.Fatalf("denied:\n%s", got)
				}
				return
			}
			if verdict.Allow || !strings.Contains(got, tc.want) {
				t.Fatalf("allow %v, reasons:\n%s\nwant %q", verdict.Allow, got, tc.want)
			}
		})
	}

	// The state in full: the key databases, the boot applications and the
	// raw events, which CEL rules can read.
	evs, err := replayFirmwareLog(sbOn, replayedPCRs(t, sbOn))
	if err != nil {
		t.Fatal(err)
	}
	fw := firmwareState(evs, replayedPCRs(t, sbOn))
	if len(fw.PK) != 1 || len(fw.KEK) == 0 || len(fw.DB) == 0 || len(fw.DBX) != fw.DBXEntries || len(fw.BootApps) == 0 || len(fw.Events) < len(evs) {
		t.Fatalf("firmware state: pk %d kek %d db %d dbx %d/%d boot apps %d events %d", len(fw.PK), len(fw.KEK), len(fw.DB), len(fw.DBX), fw.DBXEntries, len(fw.BootApps), len(fw.Events))
	}
	for _, l := range [][]string{fw.PK, fw.KEK, fw.DB, fw.DBX, fw.BootApps} {
		for _, d := range l {
			if !strings.HasPrefix(d, "sha256:") || len(d) != 71 {
				t.Fatalf("entry %q is not sha256:<64 hex>", d)
			}
		}
	}
	rule := "rules:\n  - name: fw\n    expr: >-\n      firmware.secure_boot && \"" + fw.PK[0] + "\" in firmware.pk &&\n      \"" + fw.BootApps[0] + "\" in firmware.boot_apps && size(firmware.db) > 0 &&\n      firmware.events.exists(e, e.type == \"EV_SEPARATOR\" && e.pcr == 7)\n"
	ev := testEvent(t, testPolicyName, bytes.Repeat([]byte{1}, 32))
	v := &judged{NodeID: "node", Time: time.Now(), HostPCRs: replayedPCRs(t, sbOn), FirmwareEvents: evs, Event: &ev}
	if verdict := pol(rule).Evaluate(context.Background(), v.policyEvidence(nil)); !verdict.Allow {
		t.Fatalf("a CEL rule over the firmware state denied: %q", verdict.Reasons)
	}
	v.FirmwareEvents = nil
	if verdict := pol(rule).Evaluate(context.Background(), v.policyEvidence(nil)); verdict.Allow {
		t.Fatal("a CEL rule over the firmware state allowed a launch with no log")
	}

	// A log whose SecureBoot variable says 0 while its digest still says 1
	// never reaches policy: replayFirmwareLog refuses it.
	tampered := bytes.Clone(sbOn)
	pcrs := replayedPCRs(t, sbOn)
	i := bytes.LastIndex(tampered, secureBootName)
	if i < 0 || i+len(secureBootName) >= len(tampered) || tampered[i+len(secureBootName)] != 1 {
		t.Fatal("no SecureBoot=1 variable found in the log")
	}
	tampered[i+len(secureBootName)] = 0
	if _, err := replayFirmwareLog(tampered, pcrs); err == nil {
		t.Fatal("a log with its SecureBoot variable flipped was accepted")
	}
}
