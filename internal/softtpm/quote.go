package softtpm

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"math/big"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// Quote signs the current values of the given SHA-256 PCRs and the nonce
// with the AK, as TPM2_Quote does. attest is a marshalled TPMS_ATTEST
// (magic TPM_GENERATED_VALUE, type TPM_ST_ATTEST_QUOTE, qualifiedSigner the
// AK name, extraData the nonce, clock info, firmware version, and a
// TPMS_QUOTE_INFO with the PCR selection and the SHA-256 digest of the
// selected PCR values concatenated in index order); sig is a marshalled
// TPMT_SIGNATURE, ECDSA P-256 over SHA-256(attest).
func (t *TPM) Quote(pcrs []int, nonce []byte) (attest, sig []byte, err error) {
	if len(nonce) > MaxNonceSize {
		return nil, nil, fmt.Errorf("softtpm: quote: nonce is %d bytes, the limit is %d", len(nonce), MaxNonceSize)
	}
	if len(pcrs) == 0 {
		return nil, nil, fmt.Errorf("softtpm: quote: no PCRs selected")
	}
	sel := slices.Clone(pcrs)
	slices.Sort(sel)
	if len(slices.Compact(slices.Clone(sel))) != len(sel) {
		return nil, nil, fmt.Errorf("softtpm: quote: PCR selection %v has duplicates", pcrs)
	}
	usel := make([]uint, len(sel))
	for i, p := range sel {
		if p < 0 || p >= NumPCRs {
			return nil, nil, fmt.Errorf("softtpm: quote: PCR %d out of range 0..%d", p, NumPCRs-1)
		}
		usel[i] = uint(p)
	}

	now := t.now()
	clock := now.Sub(t.start).Milliseconds()
	if clock < 0 {
		clock = 0
	}
	h := sha256.New()
	t.mu.Lock()
	for _, p := range sel {
		h.Write(t.pcrs[p][:])
	}
	t.mu.Unlock()

	a := tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: t.akName},
		ExtraData:       tpm2.TPM2BData{Buffer: slices.Clone(nonce)},
		ClockInfo: tpm2.TPMSClockInfo{
			Clock:        uint64(clock),
			ResetCount:   0,
			RestartCount: 0,
			Safe:         true,
		},
		FirmwareVersion: t.firmware,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
				Hash:      tpm2.TPMAlgSHA256,
				PCRSelect: tpm2.PCClientCompatible.PCRs(usel...),
			}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: h.Sum(nil)},
		}),
	}
	attest = tpm2.Marshal(a)
	d := sha256.Sum256(attest)
	r, s, err := ecdsa.Sign(rand.Reader, t.ak, d[:])
	if err != nil {
		return nil, nil, fmt.Errorf("softtpm: quote: signing: %w", err)
	}
	sig = tpm2.Marshal(tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash:       tpm2.TPMAlgSHA256,
			SignatureR: tpm2.TPM2BECCParameter{Buffer: pad32(r)},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: pad32(s)},
		}),
	})
	return attest, sig, nil
}

func pad32(v *big.Int) []byte { return v.FillBytes(make([]byte, 32)) }
