package signing

import (
	"context"
	"errors"
)

// ErrTPMUnavailable is returned for "tpm:" key references when this build
// cannot open a TPM signing key.
var ErrTPMUnavailable = errors.New("signing: TPM-held signing keys are not available in this build (tpm package not wired yet)")

// loadTPMSigner opens the TPM named by spec and wraps its signing key.
func loadTPMSigner(ctx context.Context, spec string) (*Signer, error) {
	_ = ctx
	_ = spec
	return nil, ErrTPMUnavailable
}
