package tpm

import (
	"bytes"
	"context"
	"fmt"

	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Quote is a TPM quote in wire form, with the PCR values it covers.
type Quote struct {
	// Quoted is the TPMS_ATTEST the TPM signed.
	Quoted []byte
	// Signature is the TPMT_SIGNATURE (ECDSA P-256, SHA-256) by the AK.
	Signature []byte
	// PCRs are the SHA-256 values of the quoted PCRs.
	PCRs map[int][]byte
}

// Quote has the AK (created if needed) sign the SHA-256 values of pcrs with
// nonce as qualifying data (limits.CheckNonceSize), and reads the values quoted.
// Before returning, it checks its own result with verify.VerifyQuote; if a
// PCR changed between quote and read it tries again.
func (t *TPM) Quote(ctx context.Context, pcrs []int, nonce []byte) (*Quote, error) {
	if err := checkPCRs(pcrs); err != nil {
		return nil, fmt.Errorf("quote: %w", err)
	}
	if err := limits.CheckNonceSize(len(nonce)); err != nil {
		return nil, fmt.Errorf("quote: %w", err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		var q *Quote
		var akPub []byte
		err := t.do(ctx, func(tp transport.TPM) error {
			ak, err := persistentKey(tp, AKHandle, tpm2.TPMRHOwner, akTemplate, true)
			if err != nil {
				return fmt.Errorf("AK: %w", err)
			}
			akPub = ak.raw
			rsp, err := tpm2.Quote{
				SignHandle:     ak.auth(),
				QualifyingData: tpm2.TPM2BData{Buffer: nonce},
				InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
				PCRSelect:      selection(pcrs),
			}.Execute(tp)
			if err != nil {
				return fmt.Errorf("quote: %w", err)
			}
			vals, err := readPCRs(tp, pcrs)
			if err != nil {
				return err
			}
			q = &Quote{Quoted: bytes.Clone(rsp.Quoted.Bytes()), Signature: tpm2.Marshal(rsp.Signature), PCRs: vals}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if _, err := verify.VerifyQuote(akPub, q.Quoted, q.Signature, nonce, q.PCRs); err != nil {
			lastErr = err
			continue // most likely a PCR was extended between quote and read
		}
		return q, nil
	}
	return nil, fmt.Errorf("quote: the TPM's quote does not verify: %w", lastErr)
}
