//go:build tools

// Package deps pins the modules the project is built on.
package deps

import (
	_ "github.com/edgelesssys/ego/enclave"
	_ "github.com/google/cel-go/cel"
	_ "github.com/google/go-attestation/attest"
	_ "github.com/google/go-containerregistry/pkg/v1/layout"
	_ "github.com/google/go-eventlog/cel"
	_ "github.com/google/go-tpm-tools/simulator"
	_ "github.com/google/go-tpm/tpm2"
	_ "github.com/sigstore/sigstore-go/pkg/verify"
	_ "github.com/sigstore/sigstore/pkg/signature"
	_ "google.golang.org/grpc"
)
