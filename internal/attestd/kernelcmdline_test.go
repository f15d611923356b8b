package attestd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/google/go-attestation/attest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// hostCmdlineLogs are go-attestation's real firmware event logs whose grub
// measured the host kernel's command line into PCR 8, with that line.
var hostCmdlineLogs = []struct{ name, cmdline string }{
	{"ubuntu_2104_shielded_vm_no_secure_boot_eventlog", "/boot/vmlinuz-5.11.0-1006-gcp root=PARTUUID=6443a6ae-e5e9-4df7-9a06-d1329e50f33c ro console=ttyS0 panic=-1"},
	{"coreos_36_shielded_vm_no_secure_boot_eventlog", "(hd0,gpt3)/ostree/fedora-coreos-28f8e018c4312083b210ce13c9fdab9dcb7883a0200802dca4eeddc1030eb715/vmlinuz-5.18.13-200.fc36.x86_64 mitigations=auto,nosmt console=tty0 console=ttyS0,115200n8 ignition.firstboot ostree=/ostree/boot.1/fedora-coreos/28f8e018c4312083b210ce13c9fdab9dcb7883a0200802dca4eeddc1030eb715/0 ignition.platform.id=gcp"},
}

// onlyPCRs keeps the PCRs of pcrs whose index is at most max (what an older
// launcher, quoting 0-7, sent).
func onlyPCRs(pcrs map[int][]byte, max int) map[int][]byte {
	out := map[int][]byte{}
	for i, v := range pcrs {
		if i <= max {
			out[i] = v
		}
	}
	return out
}

// TestHostKernelCmdline reads the host kernel's command line from real
// firmware event logs through the code attestd runs (replayFirmwareLog,
// firmwareState, Evidence, policy evaluation): with PCRs 8 and 9 quoted it
// is grub's measured line; with PCRs 0-7 only (an older launcher) the log
// still verifies as before and the line is unknown; a PCR 8 value the log
// does not replay to, or a command line edited while its digest was kept,
// is refused.
func TestHostKernelCmdline(t *testing.T) {
	dir := firmwareTestdata(t)
	for _, lg := range hostCmdlineLogs {
		t.Run(lg.name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, lg.name))
			if err != nil {
				t.Skipf("test data missing: %v", err)
			}
			pcrs := onlyPCRs(replayedPCRs(t, raw), 9)
			if pcrs[8] == nil || pcrs[9] == nil {
				t.Fatal("the log extends no PCR 8 or 9")
			}
			evs, err := replayFirmwareLog(raw, pcrs)
			if err != nil {
				t.Fatalf("genuine log with PCRs 0-9 refused: %v", err)
			}
			fw := firmwareState(evs, pcrs)
			if !fw.BootLoaderQuoted || fw.KernelCmdline != lg.cmdline {
				t.Fatalf("quoted %v, kernel command line %q, want %q", fw.BootLoaderQuoted, fw.KernelCmdline, lg.cmdline)
			}

			// An older launcher quotes PCRs 0-7: the same log verifies as
			// before, and the command line is not known.
			old := onlyPCRs(pcrs, 7)
			oldEvs, err := replayFirmwareLog(raw, old)
			if err != nil {
				t.Fatalf("genuine log with PCRs 0-7 refused: %v", err)
			}
			if fw := firmwareState(oldEvs, old); fw.BootLoaderQuoted || fw.KernelCmdline != "" {
				t.Fatalf("PCRs 0-7 only: quoted %v, command line %q", fw.BootLoaderQuoted, fw.KernelCmdline)
			}

			// PCR 8 or 9 that the log does not replay to.
			for _, idx := range []int{8, 9} {
				bad := onlyPCRs(pcrs, 9)
				bad[idx] = bytes.Repeat([]byte{7}, 32)
				_, err := replayFirmwareLog(raw, bad)
				if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "does not replay") {
					t.Fatalf("PCR %d altered: %v", idx, err)
				}
			}

			// The command line edited, its digest kept: it replays to the
			// same PCRs and is refused.
			measured := []byte("kernel_cmdline: " + lg.cmdline)
			at := bytes.Index(raw, measured)
			if at < 0 || bytes.Count(raw, measured) != 1 {
				t.Fatal("the measured command line is not in the log exactly once")
			}
			tampered := bytes.Clone(raw)
			copy(tampered[at+len(measured)-1:], "X")
			if again := onlyPCRs(replayedPCRs(t, tampered), 9); !bytes.Equal(again[8], pcrs[8]) {
				t.Fatal("the edit changed a digest")
			}
			_, err = replayFirmwareLog(tampered, pcrs)
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "EV_IPL, PCR 8") {
				t.Fatalf("command line edited, digest kept: %v", err)
			}
			// With PCRs 0-7 only the edited event is not replayed, so not
			// read: the log verifies as it did before.
			if _, err := replayFirmwareLog(tampered, old); err != nil {
				t.Fatalf("PCRs 0-7 only, an unreplayed PCR 8 event edited: %v", err)
			}
		})
	}
}

// TestHostKernelCmdlinePolicy judges a real log's host kernel command line
// against host.kernel_cmdline and a CEL rule on firmware.kernel_cmdline.
func TestHostKernelCmdlinePolicy(t *testing.T) {
	lg := hostCmdlineLogs[0]
	raw, err := os.ReadFile(filepath.Join(firmwareTestdata(t), lg.name))
	if err != nil {
		t.Skipf("test data missing: %v", err)
	}
	all := onlyPCRs(replayedPCRs(t, raw), 9)
	pol := func(extra string) *policy.Policy {
		t.Helper()
		p, err := policy.Parse("cmd.yaml", []byte(testPolicyYAML(testPolicyName, testKernel)+extra), policy.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	const celRule = "rules:\n  - name: host-cmdline\n    expr: firmware.kernel_cmdline.contains(\"console=ttyS0\")\n"
	for _, tc := range []struct {
		name string
		pcrs map[int][]byte // nil: no log sent
		host string
		want string // "" allowed, else a reason's substring
	}{
		{"required present", all, "host:\n  kernel_cmdline:\n    require: [ro, \"root=*\", console=ttyS0]\n", ""},
		{"forbidden absent", all, "host:\n  kernel_cmdline:\n    forbid: [init, nokaslr, \"lockdown=none\"]\n", ""},
		{"required missing", all, "host:\n  kernel_cmdline:\n    require: [lockdown=integrity]\n", `lacks "lockdown=integrity"`},
		{"forbidden by key", all, "host:\n  kernel_cmdline:\n    forbid: [panic]\n", `has "panic=-1", which the policy forbids`},
		{"forbidden by value", all, "host:\n  kernel_cmdline:\n    forbid: [console=ttyS0]\n", `has "console=ttyS0"`},
		{"CEL on the line", all, celRule, ""},
		{"old launcher: PCRs 0-7 only", onlyPCRs(all, 7), "host:\n  kernel_cmdline:\n    forbid: [init]\n", "PCRs 8 and 9 were not quoted"},
		{"old launcher, CEL sees no line", onlyPCRs(all, 7), celRule, "rule host-cmdline"},
		{"old launcher, no requirement", onlyPCRs(all, 7), "", ""},
		{"no log sent", nil, "host:\n  kernel_cmdline:\n    forbid: [init]\n", "no firmware event log was sent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &judged{NodeID: "node", Time: time.Now()}
			if tc.pcrs != nil {
				evs, err := replayFirmwareLog(raw, tc.pcrs)
				if err != nil {
					t.Fatal(err)
				}
				v.HostPCRs, v.FirmwareEvents = tc.pcrs, evs
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
}

// TestAttestHostKernelCmdline runs the whole Attest call: a simulated host
// TPM whose PCRs 0-9 were extended with a real firmware log's digests
// quotes them with the launch PCR, the log goes with the quote, and the
// in-process attestd replays it and judges host.kernel_cmdline. A quote
// over PCRs 0-7 only (an older launcher) with the same log still verifies,
// and the policy then says the line is unknown; a log whose command line
// was edited is refused before policy.
func TestAttestHostKernelCmdline(t *testing.T) {
	lg := hostCmdlineLogs[0]
	raw, err := os.ReadFile(filepath.Join(firmwareTestdata(t), lg.name))
	if err != nil {
		t.Skipf("test data missing: %v", err)
	}
	el, err := attest.ParseEventLog(raw)
	if err != nil {
		t.Fatal(err)
	}
	measured := map[int][][]byte{}
	for _, e := range el.Events(attest.HashSHA256) {
		if e.Index <= 9 && e.Type.String() != "EV_NO_ACTION" {
			measured[e.Index] = append(measured[e.Index], e.Digest)
		}
	}
	for _, tc := range []struct {
		name string
		host string // the policy's host section
		pcrs []int  // quoted besides the launch PCR
		log  []byte
		code codes.Code
		want string // "" allowed, else a deny reason's substring
	}{
		{"required present", "host:\n  kernel_cmdline:\n    require: [console=ttyS0, ro]\n    forbid: [init]\n", seqPCRs(9), raw, codes.OK, ""},
		{"forbidden present", "host:\n  kernel_cmdline:\n    forbid: [panic]\n", seqPCRs(9), raw, codes.OK, `has "panic=-1"`},
		{"PCRs 0-7 only, no requirement", "", seqPCRs(7), raw, codes.OK, ""},
		{"PCRs 0-7 only, line required", "host:\n  kernel_cmdline:\n    require: [ro]\n", seqPCRs(7), raw, codes.OK, "PCRs 8 and 9 were not quoted"},
		{"command line edited", "", seqPCRs(9), editedCmdline(t, raw, lg.cmdline), codes.PermissionDenied, "EV_IPL, PCR 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newInprocTPM(t, "", store.Options{}, softtpm.Options{HostPCRs: measured}, func(c *Config) {
				dir := t.TempDir()
				os.WriteFile(filepath.Join(dir, "sim.yaml"), []byte(simPolicyYAML()+tc.host), 0o600)
				w := policy.NewWatcher(dir, policy.WatcherOptions{Now: c.Now})
				if err := w.Reload(); err != nil {
					t.Fatal(err)
				}
				c.Policies = w
			})
			ch, err := p.srv.Challenge(context.Background(), &bulwarkv1.ChallengeRequest{NodeId: p.node})
			if err != nil {
				t.Fatal(err)
			}
			evd, err := p.host.Attest(append(tc.pcrs, limits.DefaultLaunchPCR), ch.GetNonce())
			if err != nil {
				t.Fatal(err)
			}
			req := &bulwarkv1.AttestRequest{NodeId: p.node, Nonce: ch.GetNonce(), Quote: evd.Quote, Signature: evd.Signature,
				Pcrs: map[uint32][]byte{}, LaunchLog: evd.Log, SandboxId: p.ev.Event.SandboxID, FirmwareEventLog: tc.log}
			for i, v := range evd.PCRs {
				req.Pcrs[uint32(i)] = v
			}
			r, err := p.srv.Attest(context.Background(), req)
			if status.Code(err) != tc.code {
				t.Fatalf("Attest: %v, want %v", err, tc.code)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Attest: %v, want %q", err, tc.want)
				}
				return
			}
			got := strings.Join(r.GetReasons(), "\n")
			if tc.want == "" {
				if r.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
					t.Fatalf("denied:\n%s", got)
				}
				return
			}
			if r.GetVerdict() == bulwarkv1.Verdict_VERDICT_ALLOW || !strings.Contains(got, tc.want) {
				t.Fatalf("verdict %v, reasons:\n%s\nwant %q", r.GetVerdict(), got, tc.want)
			}
		})
	}
}

// seqPCRs is 0..max.
func seqPCRs(max int) []int {
	var s []int
	for i := 0; i <= max; i++ {
		s = append(s, i)
	}
	return s
}

// editedCmdline is raw with the last byte of grub's measured command line
// changed, its digest kept.
func editedCmdline(t *testing.T, raw []byte, cmdline string) []byte {
	t.Helper()
	measured := []byte("kernel_cmdline: " + cmdline)
	at := bytes.Index(raw, measured)
	if at < 0 {
		t.Fatal("the measured command line is not in the log")
	}
	out := bytes.Clone(raw)
	out[at+len(measured)-1] ^= 0x20
	return out
}
