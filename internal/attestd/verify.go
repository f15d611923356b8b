package attestd

import (
	"context"
	"errors"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/evidence"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/google/go-attestation/attest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Verified is an Attest request after every check passed: evidence.Verify's
// verified state, with the node it is of and the time. Only
// VerifyAttestation makes one (its fields are unexported); policy judges
// it next.
type Verified struct {
	node store.Node
	at   time.Time
	ev   *evidence.Verified
}

// Node is the enrolled node the evidence is of.
func (v *Verified) Node() store.Node { return v.node }

// Time is when the request was verified.
func (v *Verified) Time() time.Time { return v.at }

// Evidence is the verified evidence.
func (v *Verified) Evidence() *evidence.Verified { return v.ev }

// judged is what policy judges of v.
func (v *Verified) judged() *judged {
	return &judged{NodeID: v.node.ID, Event: v.ev.Event(), HostPCRs: v.ev.HostPCRs(), FirmwareEvents: v.ev.FirmwareEvents(), Time: v.at}
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
//  4. evidence.Verify, over the node's AK and the launch log prefix
//     attestd holds (checks 4 to 7 are its own, each an *evidence.Error,
//     made a gRPC status by storeStatus): the quote: TPMT_SIGNATURE by the
//     node's AK over the TPMS_ATTEST, magic TPM_GENERATED_VALUE and type
//     ATTEST_QUOTE, extraData equal to the nonce, the PCR selection equal
//     to the PCRs sent (SHA-256 bank, the launch PCR among them) and the
//     PCR digest equal to the digest of their values (PermissionDenied
//     "quote: ..."); every PCR value used from here on is the verified
//     quote's;
//  5. the launch log parses strictly (InvalidArgument "launch_log: ...")
//     and replays to the quoted launch PCR (PermissionDenied): from zero
//     when it is the whole log; from the PCR value attestd stored at
//     launch_log_offset when it starts there — which needs a verified
//     prefix of the node's log reaching the offset, from the quote's TPM
//     boot cycle (same reset and restart counts), else FailedPrecondition
//     with reason LAUNCH_LOG_PREFIX_UNKNOWN: the host sends the whole log.
//     Where the replay passes the end of the stored prefix it must give
//     the stored PCR value (PermissionDenied otherwise: within one boot
//     cycle a TPM's launch PCR has one history);
//  6. every END record names a sandbox launched earlier in the same log,
//     once (PermissionDenied "launch_log: ..."; before the offset, the
//     stored prefix says); the log holds exactly one launch event for the
//     requested sandbox, anywhere in it, and no END for it
//     (PermissionDenied "sandbox_id: ..."; an ended sandbox is never
//     judged alive): launches and ends of other sandboxes on the host,
//     before or after, do not change this one. Before the offset,
//     attestd counts the stored prefix's records of that sandbox, and the
//     event is the sandbox_record the host sent, which must be the stored
//     record (same number and digest);
//  7. a firmware event log, when sent, parses and replays to the quoted
//     host PCRs (0-7, and 8-9 — the boot loader's — when the launcher
//     quoted them), and the data of every event whose digest covers its
//     data (the UEFI variable events, which say whether Secure Boot is on;
//     grub's strings in PCR 8, the kernel command line among them) hashes
//     to that digest (go-attestation; PermissionDenied
//     "firmware_event_log: ...").
//
// A failed evidence check is returned as its *evidence.Error (Attest
// turns it into a status); every other refusal is a gRPC status.
func (s *Server) VerifyAttestation(ctx context.Context, req *bulwarkv1.AttestRequest) (*Verified, error) {
	if err := validateAttest(req); err != nil {
		return nil, err
	}
	if _, ok := req.GetPcrs()[s.launchPCR]; !ok {
		return nil, invalid("pcrs", "the launch PCR %d is not among the quoted PCRs", s.launchPCR)
	}
	node, err := s.st.GetNode(ctx, req.GetNodeId())
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Error(codes.NotFound, "node_id: not enrolled (call Enroll)")
	}
	if err != nil {
		return nil, s.storeStatus(ctx, "attest", err)
	}
	if err := nodeActive(node); err != nil {
		return nil, err
	}
	now := s.now()
	if err := s.st.ConsumeNonce(ctx, req.GetNonce(), node.ID, now); err != nil {
		return nil, s.storeStatus(ctx, "attest", err)
	}
	var held *store.PrefixView
	hv, err := s.st.ReadLaunchPrefix(ctx, node.ID, req.GetLaunchLogOffset(), req.GetSandboxId())
	switch {
	case err == nil:
		held = &hv
	case !errors.Is(err, store.ErrNotFound):
		return nil, s.storeStatus(ctx, "attest", err)
	}
	// Before the offset, the stored prefix says which sandboxes an END
	// record of the request may end: read as of the held prefix's boot
	// cycle (evidence.Verify asks only when that is the quote's).
	other := func(id string) ([]store.PrefixRecord, error) {
		pv, err := s.st.ReadLaunchPrefix(ctx, node.ID, req.GetLaunchLogOffset(), id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return nil, nil
		case err != nil:
			return nil, err
		case !pv.Prefix.SameBoot(held.Prefix.ResetCount, held.Prefix.RestartCount):
			return nil, nil // replaced meanwhile by a new boot cycle's
		}
		return pv.Sandbox, nil
	}
	ev, err := evidence.Verify(evidenceInput(node.AKPublic, s.launchPCR, req, held, other))
	var refused *evidence.Error
	switch {
	case errors.As(err, &refused):
		return nil, err
	case err != nil:
		return nil, s.storeStatus(ctx, "attest: launch log prefix", err)
	}
	if u, ok := ev.PrefixUpdate(); ok {
		p, recs := storedPrefix(node.ID, u)
		// The prefix is attestd's memory, not part of the verdict: losing
		// a race to another attestation of the node (ErrConflict) leaves
		// the next request to send a little more.
		if _, err := s.st.AdvanceLaunchPrefix(ctx, p, recs); err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, s.storeStatus(ctx, "attest: launch log prefix", err)
		} else if err != nil {
			s.log.DebugContext(ctx, "launch log prefix not advanced", "node", node.ID, "error", err)
		}
	}
	return &Verified{node: node, at: now, ev: ev}, nil
}

// evidenceInput adapts an Attest request, the node's AK and the launch
// log prefix attestd holds (nil: none) to evidence.Verify's input. The
// held view's records are those of the request's sandbox; other reads
// another sandbox's (nil: none).
func evidenceInput(akPublic []byte, launchPCR uint32, req *bulwarkv1.AttestRequest, held *store.PrefixView, other func(id string) ([]store.PrefixRecord, error)) evidence.Input {
	in := evidence.Input{
		Quote: evidence.Quote{AKPublic: akPublic, Quoted: req.GetQuote(), Signature: req.GetSignature(), Nonce: req.GetNonce(),
			PCRs: pcrsByIndex(req.GetPcrs()), LaunchPCR: int(launchPCR)},
		LaunchLog: req.GetLaunchLog(), LaunchLogOffset: req.GetLaunchLogOffset(),
		SandboxRecord: req.GetSandboxRecord(), FirmwareLog: req.GetFirmwareEventLog(),
	}
	// A re-attestation (sandbox_ids) finds each sandbox's event in the
	// verified log after verification (reattest).
	if !isReattest(req) {
		in.SandboxID = req.GetSandboxId()
	}
	if held != nil {
		in.Held = &evidence.Prefix{ResetCount: held.Prefix.ResetCount, RestartCount: held.Prefix.RestartCount,
			Events: held.Prefix.Events, PCR: held.Prefix.PCR, PCRAt: held.PCRAt,
			Records: func(id string) ([]evidence.PrefixRecord, error) {
				recs := held.Sandbox
				if id != req.GetSandboxId() {
					var err error
					if other == nil {
						return nil, nil
					}
					if recs, err = other(id); err != nil {
						return nil, err
					}
				}
				out := make([]evidence.PrefixRecord, len(recs))
				for i, r := range recs {
					out[i] = evidence.PrefixRecord{RecNum: r.RecNum, SandboxID: r.SandboxID, Digest: r.Digest, PCR: r.PCR, End: r.End}
				}
				return out, nil
			}}
	}
	return in
}

// storedPrefix is the prefix to store for node after a verification.
func storedPrefix(node string, u evidence.PrefixUpdate) (store.LaunchPrefix, []store.PrefixRecord) {
	p := store.LaunchPrefix{NodeID: node, ResetCount: u.ResetCount, RestartCount: u.RestartCount, Clock: u.Clock, Events: u.Events, PCR: u.PCR}
	recs := make([]store.PrefixRecord, len(u.Records))
	for i, r := range u.Records {
		recs[i] = store.PrefixRecord{RecNum: r.RecNum, SandboxID: r.SandboxID, Digest: r.Digest, PCR: r.PCR, End: r.End}
	}
	return p, recs
}

// verifyEvidence is evidence.Verify on a request already validated, with
// the node's AK, the launch PCR and the launch log prefix attestd holds
// (nil: none), its refusal a gRPC status: deterministic, which is what
// FuzzAttestRequest drives.
func verifyEvidence(akPublic []byte, launchPCR uint32, req *bulwarkv1.AttestRequest, held *store.PrefixView) (*evidence.Verified, error) {
	v, err := evidence.Verify(evidenceInput(akPublic, launchPCR, req, held, nil))
	if err != nil {
		return nil, evidenceStatus(err)
	}
	return v, nil
}

// pcrsByIndex is the request's PCR map keyed as the evidence package takes it.
func pcrsByIndex(pcrs map[uint32][]byte) map[int][]byte {
	m := make(map[int][]byte, len(pcrs))
	for i, v := range pcrs {
		m[int(i)] = v
	}
	return m
}

// IsLaunchLogPrefixUnknown reports whether err is attestd's refusal of an
// incremental launch log: bulwarkv1.IsLaunchLogPrefixUnknown.
func IsLaunchLogPrefixUnknown(err error) bool { return bulwarkv1.IsLaunchLogPrefixUnknown(err) }

// replayFirmwareLog is evidence.ReplayFirmwareLog with its refusal a gRPC
// status: for a firmware log sent again with a re-attestation, or kept
// with a sandbox's evidence.
func replayFirmwareLog(b []byte, pcrs map[int][]byte) ([]attest.Event, error) {
	evs, err := evidence.ReplayFirmwareLog(b, pcrs)
	if err != nil {
		return nil, evidenceStatus(err)
	}
	return evs, nil
}
