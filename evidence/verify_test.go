package evidence

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/softtpm"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
)

// host is a software TPM (real keys, real quotes) and its launch log.
type host struct {
	t   testing.TB
	tpm *softtpm.TPM
	log measure.Log
}

func newHost(t testing.TB) *host {
	tp, err := softtpm.New(softtpm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &host{t: t, tpm: tp}
}

func (h *host) extend(a measure.Alg, pcr int, d []byte) error { return h.tpm.Extend(pcr, d) }

var sha256Only = []measure.Alg{measure.SHA256}

// launch appends a launch event for sandbox id.
func (h *host) launch(id string) {
	a := softtpm.SimulatedArtifacts()
	ev := measure.LaunchEvent{SandboxID: id, Policy: "p", Kernel: a.Kernel, Initrd: a.Initrd, Cmdline: a.Cmdline,
		CmdlineDigest: measure.DigestCmdline(measure.SHA256, a.Cmdline), GuestPublicKey: bytes.Repeat([]byte{1}, 32),
		Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if _, err := h.log.Append(&ev, limits.DefaultLaunchPCR, sha256Only, h.extend); err != nil {
		h.t.Fatal(err)
	}
}

// end appends the END record of sandbox id.
func (h *host) end(id string) {
	e := measure.EndEvent{SandboxID: id, Reason: measure.EndExited, Time: time.Date(2026, 1, 2, 3, 5, 0, 0, time.UTC)}
	if _, err := h.log.AppendEnd(&e, limits.DefaultLaunchPCR, sha256Only, h.extend); err != nil {
		h.t.Fatal(err)
	}
}

// input quotes the host PCRs 0, 4, 7 and the launch PCR over a nonce and
// returns the evidence of sandbox id, its whole log.
func (h *host) input(id string) Input {
	h.t.Helper()
	nonce := bytes.Repeat([]byte{7}, 32)
	sel := []int{0, 4, 7, limits.DefaultLaunchPCR}
	q, sig, err := h.tpm.Quote(sel, nonce)
	if err != nil {
		h.t.Fatal(err)
	}
	pcrs, err := h.tpm.ReadPCRs(sel)
	if err != nil {
		h.t.Fatal(err)
	}
	return Input{
		Quote:     Quote{AKPublic: h.tpm.AKPublic(), Quoted: q, Signature: sig, Nonce: nonce, PCRs: pcrs, LaunchPCR: limits.DefaultLaunchPCR},
		LaunchLog: h.log.Encode(), SandboxID: id,
	}
}

// heldOf is the prefix a verifier keeps after verifying in (its whole log).
func heldOf(t testing.TB, in Input) *Prefix {
	t.Helper()
	v, err := Verify(in)
	if err != nil {
		t.Fatal(err)
	}
	u, ok := v.PrefixUpdate()
	if !ok {
		t.Fatal("no prefix to keep after a whole log")
	}
	p := &Prefix{ResetCount: u.ResetCount, RestartCount: u.RestartCount, Events: u.Events, PCR: u.PCR}
	p.Records = func(id string) ([]PrefixRecord, error) {
		var out []PrefixRecord
		for _, r := range u.Records {
			if r.SandboxID == id {
				out = append(out, r)
			}
		}
		return out, nil
	}
	return p
}

// TestVerify: genuine evidence verifies, and the verified state is the
// quote's and the logs', not the caller's input: HostPCRs are the quoted
// PCRs (the launch PCR aside), copied, so changing the input afterwards
// changes nothing.
func TestVerify(t *testing.T) {
	h := newHost(t)
	h.launch("sb-a")
	h.launch("sb-b")
	h.end("sb-a")
	in := h.input("sb-b")
	v, err := Verify(in)
	if err != nil {
		t.Fatal(err)
	}
	if v.Event() == nil || v.Event().SandboxID != "sb-b" || len(v.EventDigest()) != 32 {
		t.Fatalf("event %+v digest %x", v.Event(), v.EventDigest())
	}
	if len(v.Records()) != 3 || v.LogOffset() != 0 || v.LaunchPCR() != limits.DefaultLaunchPCR {
		t.Fatalf("records %d offset %d launch PCR %d", len(v.Records()), v.LogOffset(), v.LaunchPCR())
	}
	if !bytes.Equal(v.LaunchPCRValue(), in.PCRs[limits.DefaultLaunchPCR]) {
		t.Fatalf("launch PCR value %x, quoted %x", v.LaunchPCRValue(), in.PCRs[limits.DefaultLaunchPCR])
	}
	quoted := v.Quote().PCRs()
	host := v.HostPCRs()
	if _, ok := host[limits.DefaultLaunchPCR]; ok || len(host) != 3 {
		t.Fatalf("host PCRs %v: want 0, 4, 7", host)
	}
	for i, val := range host {
		if !bytes.Equal(val, quoted[i]) {
			t.Fatalf("host PCR %d = %x, the quote's is %x", i, val, quoted[i])
		}
	}
	before := bytes.Clone(host[0])
	in.PCRs[0][0] ^= 0xff
	in.PCRs[5] = make([]byte, 32)
	host[4][0] ^= 0xff
	if again := v.HostPCRs(); !bytes.Equal(again[0], before) || again[5] != nil || bytes.Equal(again[4], host[4]) {
		t.Fatal("the verified host PCRs follow the caller's maps: they must be the quote's, copied")
	}
	u, ok := v.PrefixUpdate()
	if !ok || u.Events != 3 || len(u.Records) != 3 || !u.Records[2].End || !bytes.Equal(u.PCR, v.LaunchPCRValue()) {
		t.Fatalf("prefix update %+v, %v", u, ok)
	}
}

// TestVerifyIncremental: a log sent from an offset verifies from the held
// prefix's PCR value; the requested sandbox's event before the offset is
// the record sent, which must be the held one; a re-attestation (no
// sandbox) needs none.
func TestVerifyIncremental(t *testing.T) {
	h := newHost(t)
	h.launch("sb-a")
	h.launch("sb-b")
	held := heldOf(t, h.input(""))
	held.PCRAt = held.PCR
	h.launch("sb-c")
	h.end("sb-a")
	in := h.input("sb-c")
	in.LaunchLog, in.LaunchLogOffset, in.Held = h.log.EncodeFrom(2), 2, held
	v, err := Verify(in)
	if err != nil {
		t.Fatal(err)
	}
	if v.Event().SandboxID != "sb-c" || v.LogOffset() != 2 || len(v.Records()) != 2 {
		t.Fatalf("event %q offset %d records %d", v.Event().SandboxID, v.LogOffset(), len(v.Records()))
	}
	if u, ok := v.PrefixUpdate(); !ok || u.Events != 4 {
		t.Fatalf("prefix update %+v, %v", u, ok)
	}
	in.SandboxID = "sb-b"
	in.SandboxRecord = measure.EncodeRecord(&h.log.Records()[1])
	if v, err := Verify(in); err != nil || v.Event().SandboxID != "sb-b" {
		t.Fatalf("sandbox before the offset: %v", err)
	}
	in.SandboxID, in.SandboxRecord = "", nil
	if v, err := Verify(in); err != nil || v.Event() != nil {
		t.Fatalf("no sandbox requested: %v", err)
	}
}

// TestVerifyRefusals: each check refuses with an *Error naming the check
// and the input, its message starting with the input's name; Quoted says
// whether the quote had verified; the cause is kept for errors.Is.
func TestVerifyRefusals(t *testing.T) {
	h := newHost(t)
	h.launch("sb-a")
	h.launch("sb-b")
	h.end("sb-a")
	good := h.input("sb-b")
	held := heldOf(t, good)

	// A host whose log ends a sandbox it never launched: the END record
	// alone, extended into its TPM.
	orphan := newHost(t)
	rec := h.log.Records()[2]
	rec.RecNum = 0
	if err := orphan.tpm.Extend(limits.DefaultLaunchPCR, rec.DigestFor(measure.SHA256)); err != nil {
		t.Fatal(err)
	}
	orphanIn := orphan.input("sb-a")
	orphanIn.LaunchLog = measure.EncodeRecord(&rec)

	empty := newHost(t).input("sb-a")
	empty.LaunchLog = nil

	clone := func(f func(in *Input)) Input {
		in := good
		in.PCRs = map[int][]byte{}
		for i, v := range good.PCRs {
			in.PCRs[i] = bytes.Clone(v)
		}
		f(&in)
		return in
	}
	for _, tc := range []struct {
		name    string
		in      Input
		check   Check
		field   string
		invalid bool
		is      error
	}{
		{"launch PCR not quoted", clone(func(in *Input) { delete(in.PCRs, limits.DefaultLaunchPCR) }), CheckInput, "pcrs", true, nil},
		{"launch PCR out of range", clone(func(in *Input) { in.LaunchPCR = limits.MaxPCR + 1 }), CheckInput, "pcrs", true, nil},
		{"another nonce", clone(func(in *Input) { in.Nonce = bytes.Repeat([]byte{8}, 32) }), CheckQuote, "quote", false, verify.ErrQuote},
		{"another AK", clone(func(in *Input) { in.AKPublic = newHost(t).tpm.AKPublic() }), CheckQuote, "quote", false, verify.ErrQuote},
		{"a host PCR value not the quoted one", clone(func(in *Input) { in.PCRs[7][0] ^= 1 }), CheckQuote, "quote", false, verify.ErrQuote},
		{"a PCR value the quote does not cover", clone(func(in *Input) { in.PCRs[9] = make([]byte, 32) }), CheckQuote, "quote", false, verify.ErrQuote},
		{"signature changed", clone(func(in *Input) { in.Signature = bytes.Clone(in.Signature); in.Signature[len(in.Signature)-1] ^= 1 }), CheckQuote, "quote", false, verify.ErrQuote},
		{"offset without a held prefix", clone(func(in *Input) { in.LaunchLogOffset = 1 }), CheckPrefix, "launch_log_offset", false, nil},
		{"held prefix of another boot cycle", clone(func(in *Input) {
			p := *held
			p.ResetCount++
			p.PCRAt = p.PCR
			in.LaunchLogOffset, in.Held, in.LaunchLog = 3, &p, nil
		}), CheckPrefix, "launch_log_offset", false, nil},
		{"offset past the held prefix", clone(func(in *Input) { in.LaunchLogOffset, in.Held, in.LaunchLog = 4, held, nil }), CheckPrefix, "launch_log_offset", false, nil},
		{"launch log does not parse", clone(func(in *Input) { in.LaunchLog = []byte{0xff, 1, 2} }), CheckLaunchLog, "launch_log", true, measure.ErrMalformedLog},
		{"launch log lost a record", clone(func(in *Input) { in.LaunchLog = h.log.EncodeFrom(0)[:len(measure.EncodeRecord(&h.log.Records()[0]))] }), CheckLaunchLog, "launch_log", false, measure.ErrLogReplay},
		{"launch log of no events", empty, CheckLaunchLog, "launch_log", false, nil},
		{"an END for a sandbox never launched", orphanIn, CheckEnds, "launch_log", false, nil},
		{"sandbox not in the log", clone(func(in *Input) { in.SandboxID = "sb-z" }), CheckSandbox, "sandbox_id", false, nil},
		{"sandbox ended", clone(func(in *Input) { in.SandboxID = "sb-a" }), CheckSandbox, "sandbox_id", false, nil},
		{"sandbox record sent for an event in the log", clone(func(in *Input) { in.SandboxRecord = []byte{1} }), CheckSandbox, "sandbox_record", true, nil},
		{"firmware log does not parse", clone(func(in *Input) { in.FirmwareLog = []byte("not a firmware log") }), CheckFirmwareLog, "firmware_event_log", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Verify(tc.in)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Verify = %v, %v: want an *Error", v, err)
			}
			if v != nil || e.Check != tc.check || e.Field != tc.field || e.Invalid != tc.invalid {
				t.Fatalf("refused by %v on %q (invalid %v), want %v on %q (invalid %v): %v", e.Check, e.Field, e.Invalid, tc.check, tc.field, tc.invalid, err)
			}
			if e.Quoted() != (tc.check > CheckQuote) || e.PrefixUnknown() != (tc.check == CheckPrefix) {
				t.Fatalf("Quoted %v PrefixUnknown %v for %v", e.Quoted(), e.PrefixUnknown(), tc.check)
			}
			if want := tc.field + ": "; len(err.Error()) <= len(want) || err.Error()[:len(want)] != want {
				t.Fatalf("message %q does not start with %q", err, want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("%v is not %v", err, tc.is)
			}
		})
	}
	if _, err := Verify(good); err != nil {
		t.Fatalf("the genuine input, after the table: %v", err)
	}
}

// TestVerifyPrefixRecordsError: an error reading the held prefix's
// records is returned wrapped, not as a refusal of the evidence.
func TestVerifyPrefixRecordsError(t *testing.T) {
	h := newHost(t)
	h.launch("sb-a")
	held := heldOf(t, h.input("sb-a"))
	held.PCRAt = held.PCR
	h.launch("sb-b")
	in := h.input("sb-a")
	in.LaunchLog, in.LaunchLogOffset, in.Held = h.log.EncodeFrom(1), 1, held
	boom := errors.New("store down")
	held.Records = func(string) ([]PrefixRecord, error) { return nil, boom }
	_, err := Verify(in)
	var e *Error
	if !errors.Is(err, boom) || errors.As(err, &e) {
		t.Fatalf("Verify = %v: want the records error, not an *Error", err)
	}
}

func TestCheckString(t *testing.T) {
	for c := CheckInput; c <= CheckFirmwareLog; c++ {
		if s := c.String(); s == "" || s == fmt.Sprintf("Check(%d)", int(c)) {
			t.Errorf("check %d has no name", int(c))
		}
	}
}

// FuzzVerify feeds random bytes as each byte input of genuine evidence
// (with and without a held prefix) through Verify: nothing panics, every
// refusal is an *Error (a held prefix's records never fail here), and
// what verifies still names the requested sandbox.
func FuzzVerify(f *testing.F) {
	h := newHost(f)
	h.launch("sb-a")
	h.launch("sb-b")
	h.end("sb-a")
	good := h.input("sb-b")
	held := heldOf(f, good)
	for i := uint8(0); i < 7; i++ {
		f.Add(i, []byte{})
	}
	f.Add(uint8(0), good.Quoted)
	f.Add(uint8(1), good.Signature)
	f.Add(uint8(3), good.LaunchLog)
	f.Add(uint8(3), good.LaunchLog[:len(good.LaunchLog)/2])
	f.Add(uint8(4), measure.EncodeRecord(&h.log.Records()[1]))
	f.Fuzz(func(t *testing.T, field uint8, data []byte) {
		for _, p := range []*Prefix{nil, held} {
			in := good
			in.Held = p
			if p != nil {
				q := *p
				q.PCRAt = q.PCR
				in.Held, in.LaunchLogOffset, in.LaunchLog = &q, q.Events, nil
			}
			switch field % 7 {
			case 0:
				in.Quoted = data
			case 1:
				in.Signature = data
			case 2:
				in.Nonce = data
			case 3:
				in.LaunchLog = data
			case 4:
				in.SandboxRecord = data
			case 5:
				in.FirmwareLog = data
			case 6:
				in.SandboxID = string(data)
			}
			v, err := Verify(in)
			var e *Error
			switch {
			case err != nil && !errors.As(err, &e):
				t.Fatalf("refusal is not an *Error: %v", err)
			case err == nil && in.SandboxID != "" && (v.Event() == nil || v.Event().SandboxID != in.SandboxID):
				t.Fatalf("verified without the requested sandbox's event")
			}
		}
	})
}

// TestImportsNoTransportNoStore: the verifier links neither gRPC nor any
// of Bulwark's internal packages (the store among them), so a third party
// can verify evidence with it alone.
func TestImportsNoTransportNoStore(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "google.golang.org/grpc") || strings.HasPrefix(p, "github.com/bulwark-project/bulwark/internal/") {
			t.Errorf("evidence depends on %s", p)
		}
	}
}
