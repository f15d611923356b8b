package softtpm

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/big"
	"slices"

	"github.com/bulwark-project/bulwark/tpm/limits"
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
	if len(nonce) > limits.MaxNonceSize {
		return nil, nil, fmt.Errorf("softtpm: quote: nonce is %d bytes, the limit is %d", len(nonce), limits.MaxNonceSize)
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
		if p < 0 || p >= limits.NumPCRs {
			return nil, nil, fmt.Errorf("softtpm: quote: PCR %d out of range 0..%d", p, limits.NumPCRs-1)
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

	attest = marshalQuoteAttest(t.akName, nonce, uint64(clock), t.firmware, tpm2.PCClientCompatible.PCRs(usel...), h.Sum(nil))
	d := sha256.Sum256(attest)
	r, s, err := ecdsa.Sign(rand.Reader, t.ak, d[:])
	if err != nil {
		return nil, nil, fmt.Errorf("softtpm: quote: signing: %w", err)
	}
	sig = marshalECDSASignature(r, s)
	return attest, sig, nil
}

// The quote's structures are marshalled by hand: go-tpm's reflective
// tpm2.Marshal cost more than the ECDSA signature itself, and the load
// generator shares the machine with the server it measures. The tests check
// byte for byte that these equal tpm2.Marshal of tpm2.TPMSAttest and
// tpm2.TPMTSignature (TestQuoteMarshalMatchesGoTPM).

// marshalQuoteAttest returns the TPMS_ATTEST of a quote over one SHA-256
// PCR selection (TPM 2.0 Part 2 §10.12.12): magic, type, qualifiedSigner,
// extraData, clockInfo (resetCount and restartCount 0, safe YES),
// firmwareVersion, TPMS_QUOTE_INFO.
func marshalQuoteAttest(signer, nonce []byte, clock, firmware uint64, pcrSelect, pcrDigest []byte) []byte {
	b := make([]byte, 0, 4+2+2+len(signer)+2+len(nonce)+17+8+4+2+1+len(pcrSelect)+2+len(pcrDigest))
	b = binary.BigEndian.AppendUint32(b, uint32(tpm2.TPMGeneratedValue))
	b = binary.BigEndian.AppendUint16(b, uint16(tpm2.TPMSTAttestQuote))
	b = append2B(b, signer)
	b = append2B(b, nonce)
	b = binary.BigEndian.AppendUint64(b, clock)
	b = binary.BigEndian.AppendUint32(b, 0) // resetCount
	b = binary.BigEndian.AppendUint32(b, 0) // restartCount
	b = append(b, 1)                        // safe
	b = binary.BigEndian.AppendUint64(b, firmware)
	b = binary.BigEndian.AppendUint32(b, 1) // TPML_PCR_SELECTION.count
	b = binary.BigEndian.AppendUint16(b, uint16(tpm2.TPMAlgSHA256))
	b = append(b, byte(len(pcrSelect)))
	b = append(b, pcrSelect...)
	return append2B(b, pcrDigest)
}

// marshalECDSASignature returns the TPMT_SIGNATURE of an ECDSA-SHA256
// P-256 signature.
func marshalECDSASignature(r, s *big.Int) []byte {
	b := make([]byte, 0, 2+2+2+32+2+32)
	b = binary.BigEndian.AppendUint16(b, uint16(tpm2.TPMAlgECDSA))
	b = binary.BigEndian.AppendUint16(b, uint16(tpm2.TPMAlgSHA256))
	b = append2B(b, pad32(r))
	return append2B(b, pad32(s))
}

func append2B(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

func pad32(v *big.Int) []byte { return v.FillBytes(make([]byte, 32)) }
