package signing

import (
	"context"
	"fmt"

	"github.com/bulwark-project/bulwark/tpm"
)

// loadTPMSigner opens the TPM named by spec (tpm.ParseSpec: "" for the
// default TPM, a device path, swtpm:DIR, tcp:HOST:PORT, sim) and wraps its
// persistent signing key. Closing the Signer closes the TPM.
func loadTPMSigner(ctx context.Context, spec string) (*Signer, error) {
	t, err := tpm.Open(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("signing: opening TPM %q: %w", spec, err)
	}
	cs, err := t.Signer(ctx)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("signing: TPM signing key: %w", err)
	}
	s, err := NewSigner(cs, t)
	if err != nil {
		t.Close()
		return nil, err
	}
	return s, nil
}
