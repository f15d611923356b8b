//go:build !cgo

package tpm

import (
	"context"
	"errors"

	"github.com/google/go-tpm/tpm2/transport"
)

func openSimulator(context.Context) (transport.TPMCloser, error) {
	return nil, errors.New(`TPM spec "sim": the in-process simulator needs cgo; rebuild with CGO_ENABLED=1 (and libssl-dev installed), or use swtpm:DIR`)
}

const simulatorAvailable = false
