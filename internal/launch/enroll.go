package launch

import (
	"context"
	"errors"
	"fmt"

	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/tpm"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

// Enroll registers this host's TPM with attestd: it sends the EK (and its
// certificate, when the TPM has one) and the AK, proves with
// ActivateCredential that the AK lives in the same TPM as the EK, and
// returns the node id attestd knows the host by.
func Enroll(ctx context.Context, tpmSpec string, o attestclient.Options) (string, error) {
	t, err := tpm.Open(ctx, tpmSpec)
	if err != nil {
		return "", fmt.Errorf("host TPM: %w", err)
	}
	defer t.Close()
	ek, err := t.EKPublic(ctx)
	if err != nil {
		return "", fmt.Errorf("host TPM: EK: %w", err)
	}
	cert, err := t.EKCertificate(ctx)
	if errors.Is(err, tpm.ErrNoEKCert) {
		cert = nil // attestd must then allow-list this EK (--ek-allow)
	} else if err != nil {
		return "", fmt.Errorf("host TPM: EK certificate: %w", err)
	}
	ak, err := t.AK(ctx)
	if err != nil {
		return "", fmt.Errorf("host TPM: attestation key: %w", err)
	}
	c, err := attestclient.Dial(o)
	if err != nil {
		return "", fmt.Errorf("attestd: %w", err)
	}
	defer c.Close()
	resp, err := c.Enroll(ctx, ek, cert, ak.Public)
	if err != nil {
		return "", attestdError("enroll", err)
	}
	if want := limits.NodeID(ek); resp.GetNodeId() != want {
		return "", fmt.Errorf("attestd named this host %q, expected %q", resp.GetNodeId(), want)
	}
	secret, err := t.ActivateCredential(ctx, resp.GetCredentialBlob(), resp.GetEncryptedSecret())
	if err != nil {
		return "", fmt.Errorf("host TPM: activating attestd's credential: %w", err)
	}
	if err := c.Activate(ctx, resp.GetNodeId(), secret); err != nil {
		return "", attestdError("activate", err)
	}
	return resp.GetNodeId(), nil
}
