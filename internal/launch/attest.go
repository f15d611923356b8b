package launch

import (
	"context"
	"errors"
	"fmt"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/attestclient"
)

// attestHost is the launch's attest step, on one ChallengeAttest call: a
// nonce and the launch log prefix attestd has verified (the challenge), a
// quote taken under the host log's lock with only the records after that
// prefix (QuoteWithLogAfter), and the attest request.
// base carries the request's other fields (node, sandbox, signatures,
// firmware log). When attestd cannot replay from the prefix (the host
// rebooted since: LAUNCH_LOG_PREFIX_UNKNOWN) it sends the whole log, over
// a new nonce, once.
func attestHost(ctx context.Context, client *attestclient.Client, hostLog *HostLog, t quoteTPM, pcrs []int, base *bulwarkv1.AttestRequest) (*bulwarkv1.AttestResponse, error) {
	askPrefix := true
	for {
		var offset uint64
		build := func(ch *bulwarkv1.ChallengeResponse) (*bulwarkv1.AttestRequest, error) {
			// The log as it stands for this quote: other launches on this
			// host may have appended since ours (attestd finds our event
			// anywhere in it).
			ql, err := hostLog.QuoteWithLogAfter(ctx, t, pcrs, ch.GetNonce(), ch.GetLaunchLogPrefix(), base.GetSandboxId())
			if err != nil {
				return nil, err
			}
			offset = ql.Offset
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
			return req, nil
		}
		// Challenge and Attest on one call (two with an older attestd).
		ar, err := client.ChallengeAttest(ctx, &bulwarkv1.ChallengeRequest{NodeId: base.GetNodeId(), LaunchLogPrefix: askPrefix}, build)
		var se *attestclient.StepError
		switch {
		case err == nil:
			return ar, nil
		case !errors.As(err, &se):
			return nil, err // taking the quote failed
		case se.Step == "challenge":
			return nil, fmt.Errorf("%w%s", attestdError("challenge", se.Err), enrollHint(se.Err))
		case offset > 0 && askPrefix && bulwarkv1.IsLaunchLogPrefixUnknown(se.Err):
			askPrefix = false
			continue
		default:
			return nil, attestdError("attest", se.Err)
		}
	}
}
