package attestd

import (
	"bytes"
	"context"
	"crypto"
	_ "crypto/sha1" // for firmware event logs' SHA-1 digests
	_ "crypto/sha256"
	_ "crypto/sha512" // SHA-384
	"crypto/subtle"
	"errors"
	"fmt"
	"sort"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/google/go-attestation/attest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Verified is the state of an attestation request after every
// cryptographic check passed. It exists only as the result of
// VerifyAttestation; policy judges it next.
type Verified struct {
	Node store.Node
	// Event is the judged launch event: the one event of the replayed
	// launch log whose sandbox id is the one requested.
	Event *measure.LaunchEvent
	// Records are every launch event record of the replayed log.
	Records []measure.Record
	// LaunchPCR and LaunchPCRValue are the quoted launch PCR.
	LaunchPCR      uint32
	LaunchPCRValue []byte
	// HostPCRs are the other quoted SHA-256 PCRs (index → value).
	HostPCRs map[int][]byte
	// FirmwareEvents is the replayed firmware event log, nil when none was
	// sent.
	FirmwareEvents []attest.Event
	Time           time.Time
}

// VerifyAttestation runs every check on an Attest request that does not
// depend on policy, in this order, and returns the verified state only
// when all pass:
//
//  1. the request is well formed (every field present, sized and shaped;
//     InvalidArgument naming the field otherwise);
//  2. the node is enrolled (NotFound) and its AK activated
//     (FailedPrecondition; PermissionDenied when revoked);
//  3. the nonce was issued to this node, is unexpired, and is consumed
//     now, atomically (a replay, an expired or a foreign nonce is
//     PermissionDenied);
//  4. the quote: TPMT_SIGNATURE by the node's AK over the TPMS_ATTEST,
//     magic TPM_GENERATED_VALUE and type ATTEST_QUOTE, extraData equal to
//     the nonce, the PCR selection equal to the PCRs sent (SHA-256 bank,
//     the launch PCR among them) and the PCR digest equal to the digest of
//     their values (PermissionDenied "quote: ...");
//  5. the launch log parses strictly (InvalidArgument "launch_log: ...")
//     and replays to the quoted launch PCR (PermissionDenied);
//  6. the log holds exactly one event for the requested sandbox, anywhere
//     in it (PermissionDenied "sandbox_id: ..."): launches of other
//     sandboxes on the host, before or after, do not change this one;
//  7. a firmware event log, when sent, parses and replays to the quoted
//     host PCRs (0-7, and 8-9 — the boot loader's — when the launcher
//     quoted them), and the data of every event whose digest covers its
//     data (the UEFI variable events, which say whether Secure Boot is on;
//     grub's strings in PCR 8, the kernel command line among them) hashes
//     to that digest (go-attestation; PermissionDenied
//     "firmware_event_log: ...").
func (s *Server) VerifyAttestation(ctx context.Context, req *bulwarkv1.AttestRequest) (*Verified, error) {
	v, _, err := s.verifyAttestation(ctx, req)
	return v, err
}

// verifyAttestation is VerifyAttestation, and says whether the quote
// verified (check 4 passed) before a later check refused: only then has
// the caller proven something a stranger cannot (a fresh quote by the
// node's AK over the nonce), and only then is a refusal audited.
func (s *Server) verifyAttestation(ctx context.Context, req *bulwarkv1.AttestRequest) (v *Verified, quoted bool, err error) {
	if err := validateAttest(req); err != nil {
		return nil, false, err
	}
	if _, ok := req.GetPcrs()[s.launchPCR]; !ok {
		return nil, false, invalid("pcrs", "the launch PCR %d is not among the quoted PCRs", s.launchPCR)
	}
	node, err := s.st.GetNode(ctx, req.GetNodeId())
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, status.Error(codes.NotFound, "node_id: not enrolled (call Enroll)")
	}
	if err != nil {
		return nil, false, s.storeStatus(ctx, "attest", err)
	}
	if err := nodeActive(node); err != nil {
		return nil, false, err
	}
	now := s.now()
	if err := s.st.ConsumeNonce(ctx, req.GetNonce(), node.ID, now); err != nil {
		return nil, false, s.storeStatus(ctx, "attest", err)
	}
	if err := checkQuote(node.AKPublic, s.launchPCR, req); err != nil {
		return nil, false, err
	}
	if v, err = checkQuoted(s.launchPCR, req); err != nil {
		return nil, true, err
	}
	v.Node, v.Time = node, now
	return v, true, nil
}

// verifyEvidence is the part of VerifyAttestation that needs no state:
// checks 4 to 7 on a request already validated, with the node's AK and
// the launch PCR. It is deterministic, which is what FuzzAttestRequest
// drives.
func verifyEvidence(akPublic []byte, launchPCR uint32, req *bulwarkv1.AttestRequest) (*Verified, error) {
	if err := checkQuote(akPublic, launchPCR, req); err != nil {
		return nil, err
	}
	return checkQuoted(launchPCR, req)
}

// checkQuote is check 4: the quote is signed by the AK, over the nonce
// and the PCR values sent, the launch PCR among them.
func checkQuote(akPublic []byte, launchPCR uint32, req *bulwarkv1.AttestRequest) error {
	if _, ok := req.GetPcrs()[launchPCR]; !ok {
		return invalid("pcrs", "the launch PCR %d is not among the quoted PCRs", launchPCR)
	}
	if err := verifyQuote(akPublic, req.GetQuote(), req.GetSignature(), req.GetNonce(), req.GetPcrs()); err != nil {
		return status.Errorf(codes.PermissionDenied, "quote: %v", err)
	}
	return nil
}

// sandboxEvent is check 6: the one launch event of the requested sandbox,
// wherever it stands in the log (other sandboxes launched on the host since
// do not change what runs in this one). A sandbox id is launched once: two
// events for it are refused as ambiguous.
func sandboxEvent(recs []measure.Record, id string) (*measure.LaunchEvent, error) {
	var ev *measure.LaunchEvent
	n := 0
	for i := range recs {
		if recs[i].Event.SandboxID == id {
			ev = recs[i].Event
			n++
		}
	}
	switch n {
	case 0:
		return nil, status.Errorf(codes.PermissionDenied, "sandbox_id: the launch log has no event for sandbox %q (%d events for other sandboxes)", id, len(recs))
	case 1:
		return ev, nil
	}
	return nil, status.Errorf(codes.PermissionDenied, "sandbox_id: the launch log has %d events for sandbox %q; a sandbox id is launched once", n, id)
}

// checkQuoted is checks 5 to 7, on a request whose quote checkQuote
// verified: the PCR values are those the TPM quoted.
func checkQuoted(launchPCR uint32, req *bulwarkv1.AttestRequest) (*Verified, error) {
	launchValue := req.GetPcrs()[launchPCR]
	lg, err := measure.ParseLog(req.GetLaunchLog())
	if err != nil {
		return nil, invalid("launch_log", "%v", err)
	}
	recs := lg.Records()
	for i := range recs {
		if recs[i].PCR != int(launchPCR) {
			return nil, status.Errorf(codes.PermissionDenied, "launch_log: record %d is for PCR %d, not the launch PCR %d", recs[i].RecNum, recs[i].PCR, launchPCR)
		}
	}
	replayed, err := measure.Replay(lg, int(launchPCR), measure.SHA256)
	if err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "launch_log: %v", err)
	}
	if subtle.ConstantTimeCompare(replayed, launchValue) != 1 {
		return nil, status.Errorf(codes.PermissionDenied, "launch_log: replay of %d events gives PCR %d = %x, the quote says %x (log edited or incomplete)",
			len(recs), launchPCR, replayed, launchValue)
	}
	if len(recs) == 0 {
		return nil, status.Error(codes.PermissionDenied, "launch_log: no launch events")
	}
	ev, err := sandboxEvent(recs, req.GetSandboxId())
	if err != nil {
		return nil, err
	}

	v := &Verified{
		Event: ev, Records: recs, LaunchPCR: launchPCR, LaunchPCRValue: launchValue,
		HostPCRs: make(map[int][]byte, len(req.GetPcrs())-1),
	}
	for idx, val := range req.GetPcrs() {
		if idx != launchPCR {
			v.HostPCRs[int(idx)] = val
		}
	}
	if fw := req.GetFirmwareEventLog(); len(fw) > 0 {
		var err error
		if v.FirmwareEvents, err = replayFirmwareLog(fw, v.HostPCRs); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// replayFirmwareLog parses a TCG firmware event log and replays it against
// the quoted (hence verified) host PCRs.
func replayFirmwareLog(b []byte, pcrs map[int][]byte) (evs []attest.Event, err error) {
	defer func() {
		if r := recover(); r != nil { // third-party parser of untrusted bytes
			evs, err = nil, invalid("firmware_event_log", "does not parse")
		}
	}()
	el, err := attest.ParseEventLog(b)
	if err != nil {
		return nil, invalid("firmware_event_log", "%v", err)
	}
	idx := make([]int, 0, len(pcrs))
	for i := range pcrs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	list := make([]attest.PCR, 0, len(idx))
	for _, i := range idx {
		list = append(list, attest.PCR{Index: i, Digest: pcrs[i], DigestAlg: crypto.SHA256})
	}
	evs, err = el.Verify(list)
	if err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "firmware_event_log: does not replay to the quoted PCRs: %v", err)
	}
	if err := checkEventData(evs); err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "firmware_event_log: %v", err)
	}
	return evs, nil
}

// Event types whose digest, by the TCG PC Client Platform Firmware
// Profile, is the digest of the event's data itself. Replay verifies only
// digests; for these the data is what a reader acts on (the UEFI
// variables SecureBoot, PK, KEK, db, dbx; the separators; the authorities
// that verified a boot image), so it must hash to the verified digest.
var digestOfData = map[attest.EventType]string{
	0x00000004: "EV_SEPARATOR",
	0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
	0x80000006: "EV_EFI_GPT_EVENT",
	0x800000e0: "EV_EFI_VARIABLE_AUTHORITY",
}

// checkEventData refuses a replayed log in which an event whose digest
// covers its data carries data that does not hash to it: the digest
// replayed, the data was changed (a SecureBoot variable that reads 0 in a
// log whose quoted PCR 7 says otherwise).
func checkEventData(evs []attest.Event) error {
	for i := range evs {
		e := &evs[i]
		name, ok := digestOfData[e.Type]
		if !ok {
			continue
		}
		if dataMatches(e.Digest, e.Data) {
			continue
		}
		// Shims before rhboot/shim 8a27a48 measure one extra byte into
		// EV_EFI_VARIABLE_AUTHORITY's data (go-attestation issue 157, which
		// ParseSecurebootState accepts the same way).
		if name == "EV_EFI_VARIABLE_AUTHORITY" && len(e.Data) > 0 && dataMatches(e.Digest, e.Data[:len(e.Data)-1]) {
			continue
		}
		return fmt.Errorf("event %d (%s, PCR %d): its data does not hash to its replayed digest (the data was changed)", i, name, e.Index)
	}
	for i := range evs {
		e := &evs[i]
		text, _, ok := grubString(e)
		if !ok {
			continue
		}
		// grub measures the text after its prefix, with or without the
		// NUL that ends it (go-eventlog's GrubStateFromTPMLog alike).
		if dataMatches(e.Digest, text) || len(text) > 0 && text[len(text)-1] == 0 && dataMatches(e.Digest, text[:len(text)-1]) {
			continue
		}
		return fmt.Errorf("event %d (EV_IPL, PCR %d, %q): its text does not hash to its replayed digest (the data was changed)", i, e.Index, trunc(string(e.Data)))
	}
	return nil
}

// evIPL is EV_IPL, the event type boot loaders measure their strings and
// files with.
const evIPL = 0x0000000d

// grubPrefixes start the strings grub measures into PCR 8 (the GRUB
// manual's "Measured Boot", and the older prefixes of distributions' TPM
// patches); the digest is over the text after the prefix.
var grubPrefixes = []string{"grub_cmd: ", "kernel_cmdline: ", "module_cmdline: ", "grub_kernel_cmdline ", "grub_cmd "}

// grubString splits a PCR 8 EV_IPL event that grub measured into its
// prefix and the text the digest covers; ok is false for any other event.
func grubString(e *attest.Event) (text []byte, prefix string, ok bool) {
	if e.Index != 8 || uint32(e.Type) != evIPL {
		return nil, "", false
	}
	for _, p := range grubPrefixes {
		if t, found := bytes.CutPrefix(e.Data, []byte(p)); found {
			return t, p, true
		}
	}
	return nil, "", false
}

// dataMatches says whether data hashes to digest, whose length says the
// algorithm (SHA-256, SHA-384 or SHA-1).
func dataMatches(digest, data []byte) bool {
	var h crypto.Hash
	switch len(digest) {
	case crypto.SHA256.Size():
		h = crypto.SHA256
	case crypto.SHA384.Size():
		h = crypto.SHA384
	case crypto.SHA1.Size():
		h = crypto.SHA1
	default:
		return false
	}
	w := h.New()
	w.Write(data)
	return subtle.ConstantTimeCompare(w.Sum(nil), digest) == 1
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
