// Package limits holds the TPM parameters every part of Bulwark must agree
// on: the PCR bank, the launch PCR, the size of a quote's nonce, and how a
// host is named (NodeID).
//
// It imports nothing but the standard library, so the verifier (tpm/verify),
// the TPM client (tpm), the launch event log (measure), the policy evaluator,
// the store and the simulator share one definition without linking one
// another.
package limits

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// PCR indexes.
const (
	// MaxPCR is the highest PCR index: a PC Client TPM has 24 PCRs, 0..23.
	MaxPCR = 23
	// NumPCRs is the number of PCRs in a bank (MaxPCR+1).
	NumPCRs = MaxPCR + 1
	// DefaultLaunchPCR is the PCR the launcher extends launch events into
	// unless configured otherwise (docs/architecture.md): a
	// debug/application PCR that firmware and the boot chain leave alone
	// and that is not resettable from locality 0 (Confidential Space uses
	// 13 for its container event log). The launcher's --pcr and attestd's
	// --launch-pcr must name the same PCR.
	DefaultLaunchPCR = 13
	// MinLaunchPCR is the lowest launch PCR: PCR 0 holds the firmware's
	// own measurements.
	MinLaunchPCR = 1
)

// LaunchPCRError is the error CheckLaunchPCR returns.
type LaunchPCRError struct{ PCR int }

func (e *LaunchPCRError) Error() string {
	return fmt.Sprintf("launch PCR %d: want %d..%d", e.PCR, MinLaunchPCR, MaxPCR)
}

// CheckLaunchPCR returns a *LaunchPCRError unless pcr can be the launch
// PCR: MinLaunchPCR..MaxPCR. Every place that takes a launch PCR (the
// launcher, attestd, the load generator) checks it with this function, so
// they accept exactly the same values.
func CheckLaunchPCR(pcr int) error {
	if pcr < MinLaunchPCR || pcr > MaxPCR {
		return &LaunchPCRError{PCR: pcr}
	}
	return nil
}

// Nonce sizes, in bytes. A nonce is the qualifying data (extraData) a quote
// signs. attestd issues nonces of its own fixed size (attestd.NonceSize, 32
// bytes), which lies within these bounds; everything that stores, quotes
// over or verifies a nonce accepts exactly MinNonceSize..MaxNonceSize.
const (
	// MinNonceSize is the shortest nonce accepted: 128 bits, so a nonce
	// cannot be guessed in advance to replay a quote.
	MinNonceSize = 16
	// MaxNonceSize is the longest qualifying data accepted: the largest
	// digest (SHA-512). A TPM takes at most sizeof(TPMT_HA) bytes, its
	// largest digest plus two: 66 with SHA-512 but only 34 on a TPM
	// with nothing above SHA-256, which is why attestd issues 32-byte
	// nonces.
	MaxNonceSize = 64
)

// CheckNonceSize returns an error unless a nonce of n bytes is within
// MinNonceSize..MaxNonceSize.
func CheckNonceSize(n int) error {
	if n < MinNonceSize || n > MaxNonceSize {
		return fmt.Errorf("nonce of %d bytes, want %d..%d", n, MinNonceSize, MaxNonceSize)
	}
	return nil
}

// NodeID is how Bulwark names a host: "sha256:" + hex of the SHA-256 of its
// EK public area in TPM wire form (marshalled TPMT_PUBLIC). attestd assigns
// it at enrollment, the store checks a node's id against its EK, and the
// launcher computes the same from its own TPM.
func NodeID(ekPublic []byte) string {
	sum := sha256.Sum256(ekPublic)
	return "sha256:" + hex.EncodeToString(sum[:])
}
