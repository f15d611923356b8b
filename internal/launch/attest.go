package launch

import (
	"context"
	"fmt"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/attestclient"
)

// attestHost is the launch's attest step: a nonce and the launch log prefix
// attestd has verified (Challenge), a quote taken under the host log's lock
// with only the records after that prefix (QuoteWithLogAfter), and Attest.
// base carries the request's other fields (node, sandbox, signatures,
// firmware log). When attestd cannot replay from the prefix (the host
// rebooted since: LAUNCH_LOG_PREFIX_UNKNOWN) it sends the whole log, over
// a new nonce, once.
func attestHost(ctx context.Context, client *attestclient.Client, hostLog *HostLog, t quoteTPM, pcrs []int, base *bulwarkv1.AttestRequest) (*bulwarkv1.AttestResponse, error) {
	askPrefix := true
	for {
		ch, err := client.Attestation.Challenge(ctx, &bulwarkv1.ChallengeRequest{NodeId: base.GetNodeId(), LaunchLogPrefix: askPrefix})
		if err != nil {
			return nil, fmt.Errorf("%w%s", attestdError("challenge", err), enrollHint(err))
		}
		// The log as it stands for this quote: other launches on this host
		// may have appended since ours (attestd finds our event anywhere in
		// it).
		ql, err := hostLog.QuoteWithLogAfter(ctx, t, pcrs, ch.GetNonce(), ch.GetLaunchLogPrefix(), base.GetSandboxId())
		if err != nil {
			return nil, err
		}
		req := &bulwarkv1.AttestRequest{
			NodeId: base.GetNodeId(), Nonce: ch.GetNonce(), Quote: ql.Quote.Quoted, Signature: ql.Quote.Signature,
			FirmwareEventLog: base.GetFirmwareEventLog(), Pcrs: map[uint32][]byte{}, LaunchLog: ql.Log,
			LaunchLogOffset: ql.Offset, SandboxRecord: ql.SandboxRecord, SandboxId: base.GetSandboxId(),
			Signatures: base.GetSignatures(), OmitToken: base.GetOmitToken(),
			SandboxIds: base.GetSandboxIds(), EndedSandboxIds: base.GetEndedSandboxIds(), ReattestIntervalSeconds: base.GetReattestIntervalSeconds(),
		}
		for i, v := range ql.Quote.PCRs {
			req.Pcrs[uint32(i)] = v
		}
		ar, err := client.Attest(ctx, req)
		if err != nil && ql.Offset > 0 && askPrefix && bulwarkv1.IsLaunchLogPrefixUnknown(err) {
			askPrefix = false
			continue
		}
		if err != nil {
			return nil, attestdError("attest", err)
		}
		return ar, nil
	}
}
