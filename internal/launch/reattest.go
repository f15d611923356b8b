package launch

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/tpm"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

// Host is what the host service needs to attest its host again and to
// watch attestd's decisions: its TPM (open for the service's lifetime),
// its launch log and its attestd client. Safe for concurrent use, as the
// TPM and the launch log are.
type Host struct {
	tpm      *tpm.TPM
	stateDir string
	pcr      int
	client   *attestclient.Client
	nodeID   string
}

// NewHost reads the host's node id (from its EK) and returns the Host.
func NewHost(ctx context.Context, t *tpm.TPM, stateDir string, pcr int, client *attestclient.Client) (*Host, error) {
	ek, err := t.EKPublic(ctx)
	if err != nil {
		return nil, fmt.Errorf("host TPM: %w", err)
	}
	return &Host{tpm: t, stateDir: stateDir, pcr: pcr, client: client, nodeID: limits.NodeID(ek)}, nil
}

// NodeID is the host's node id.
func (h *Host) NodeID() string { return h.nodeID }

// Reattest attests the host again for the running sandboxes ids, with one
// quote over the launch log (only the records attestd has not verified),
// names the sandboxes that ended since the last time, and says the
// interval it re-attests at. attestd answers with a verdict per running
// sandbox (AttestResponse.sandboxes).
func (h *Host) Reattest(ctx context.Context, ids, ended []string, interval time.Duration) (*bulwarkv1.AttestResponse, error) {
	node := h.nodeID
	fwLog, err := firmwareLog(h.tpm.Spec(), FirmwareLogPath)
	if err != nil {
		return nil, err
	}
	hostLog := NewHostLog(filepath.Join(h.stateDir, "launch"), h.pcr)
	return attestHost(ctx, h.client, hostLog, h.tpm, quotedPCRs(h.pcr, fwLog), &bulwarkv1.AttestRequest{
		NodeId: node, FirmwareEventLog: fwLog, SandboxIds: ids, EndedSandboxIds: ended, OmitToken: true,
		ReattestIntervalSeconds: uint32(interval / time.Second),
	})
}

// Watch opens attestd's stream of decisions about this host's sandboxes
// after seq: a nonce (Challenge, watch), a quote over it by the AK, and
// WatchNode. The stream's first message is a heartbeat.
func (h *Host) Watch(ctx context.Context, after uint64) (bulwarkv1.Attestation_WatchNodeClient, error) {
	node := h.nodeID
	ch, err := h.client.Attestation.Challenge(ctx, &bulwarkv1.ChallengeRequest{NodeId: node, Watch: true})
	if err != nil {
		return nil, attestdError("challenge", err)
	}
	q, err := h.tpm.Quote(ctx, []int{h.pcr}, ch.GetNonce())
	if err != nil {
		return nil, fmt.Errorf("TPM quote: %w", err)
	}
	req := &bulwarkv1.WatchNodeRequest{NodeId: node, Nonce: ch.GetNonce(), Quote: q.Quoted, Signature: q.Signature,
		Pcrs: map[uint32][]byte{}, AfterSeq: after}
	for i, v := range q.PCRs {
		req.Pcrs[uint32(i)] = v
	}
	st, err := h.client.Attestation.WatchNode(ctx, req)
	if err != nil {
		return nil, attestdError("watch", err)
	}
	return st, nil
}
