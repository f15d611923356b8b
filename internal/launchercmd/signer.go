package launchercmd

import (
	"context"
	"fmt"
	"strings"

	"github.com/bulwark-project/bulwark/signing"
	"github.com/bulwark-project/bulwark/tpm"
)

// loadSigner opens the signing key named by keyRef: "tpm:" or "tpm:SPEC" is
// the signing key of the TPM tpm.Open opens with SPEC (empty: the default
// TPM); anything else is a cosign key file (signing.LoadSigner), pass
// supplying its password. The signing package takes the TPM's key as a
// crypto.Signer, so it links no TPM client. Close the Signer when done:
// for a TPM key it closes the TPM.
func loadSigner(ctx context.Context, keyRef string, pass func() ([]byte, error)) (*signing.Signer, error) {
	spec, ok := strings.CutPrefix(keyRef, "tpm:")
	if !ok {
		return signing.LoadSigner(keyRef, pass)
	}
	t, err := tpm.Open(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("signing: opening TPM %q: %w", spec, err)
	}
	cs, err := t.Signer(ctx)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("signing: TPM signing key: %w", err)
	}
	s, err := signing.NewSigner(cs, t)
	if err != nil {
		t.Close()
		return nil, err
	}
	return s, nil
}
