package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/subtle"
	"fmt"
	"math/big"
	"sort"

	"github.com/bulwark-project/bulwark/tpm/limits"
)

const (
	tpmGeneratedValue uint32 = 0xff544347
	stAttestQuote     uint16 = 0x8018
)

// ClockInfo is the TPMS_CLOCK_INFO of a quote.
type ClockInfo struct {
	Clock        uint64 // milliseconds the TPM has been powered
	ResetCount   uint32 // TPM resets (host reboots) since manufacture or TPM2_Clear
	RestartCount uint32 // TPM restarts/resumes since the last reset
	Safe         bool   // Clock has not gone backwards
}

// QuoteResult is what VerifyQuote returns after every check passed. Its
// fields are unexported: there is no way to obtain one for a quote that
// failed, nor to build one by hand. A QuoteResult is immutable (its
// accessors return copies) and safe for concurrent use.
type QuoteResult struct {
	pcrs            map[int][]byte
	clock           ClockInfo
	firmwareVersion uint64
	qualifiedSigner []byte
	akName          []byte
}

// PCRs returns the verified SHA-256 PCR values, by index: those the quote
// selected, whose digest it signed.
func (r *QuoteResult) PCRs() map[int][]byte {
	m := make(map[int][]byte, len(r.pcrs))
	for i, v := range r.pcrs {
		m[i] = bytes.Clone(v)
	}
	return m
}

// PCR returns the verified value of PCR i, and whether the quote selected it.
func (r *QuoteResult) PCR(i int) ([]byte, bool) {
	v, ok := r.pcrs[i]
	return bytes.Clone(v), ok
}

// Clock returns the quote's clock information.
func (r *QuoteResult) Clock() ClockInfo { return r.clock }

// FirmwareVersion returns the TPM vendor's firmware version.
func (r *QuoteResult) FirmwareVersion() uint64 { return r.firmwareVersion }

// QualifiedSigner returns the qualified name of the AK as the TPM reported it.
func (r *QuoteResult) QualifiedSigner() []byte { return bytes.Clone(r.qualifiedSigner) }

// AKName returns the Name of the AK the quote was verified with.
func (r *QuoteResult) AKName() []byte { return bytes.Clone(r.akName) }

// Attest is a parsed TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
type attest struct {
	magic           uint32
	typ             uint16
	qualifiedSigner []byte
	extraData       []byte
	clock           ClockInfo
	firmware        uint64
	selections      []pcrSelection
	pcrDigest       []byte
}

type pcrSelection struct {
	hash uint16
	pcrs []int
}

func parseAttest(b []byte) (*attest, error) {
	if len(b) > MaxAttestSize {
		return nil, fmt.Errorf("%w: attest of %d bytes exceeds limit %d", ErrMalformed, len(b), MaxAttestSize)
	}
	r := &reader{b: b}
	a := &attest{}
	a.magic = r.u32("magic")
	a.typ = r.u16("type")
	a.qualifiedSigner = r.sized(2+64, "qualifiedSigner")
	a.extraData = r.sized(limits.MaxNonceSize, "extraData")
	a.clock.Clock = r.u64("clock")
	a.clock.ResetCount = r.u32("resetCount")
	a.clock.RestartCount = r.u32("restartCount")
	safe := r.u8("safe")
	a.clock.Safe = safe == 1
	a.firmware = r.u64("firmwareVersion")
	if r.err != nil {
		return nil, r.err
	}
	if safe > 1 {
		return nil, fmt.Errorf("%w: clockInfo.safe is %d", ErrMalformed, safe)
	}
	if a.magic != tpmGeneratedValue {
		return nil, fmt.Errorf("%w: magic 0x%08x is not TPM_GENERATED_VALUE", ErrQuote, a.magic)
	}
	if a.typ != stAttestQuote {
		return nil, fmt.Errorf("%w: attestation type 0x%04x is not TPM_ST_ATTEST_QUOTE", ErrQuote, a.typ)
	}
	count := r.u32("pcrSelect.count")
	if r.err == nil && count > 16 {
		return nil, fmt.Errorf("%w: %d PCR banks selected", ErrMalformed, count)
	}
	for i := uint32(0); i < count && r.err == nil; i++ {
		s := pcrSelection{hash: r.u16("pcrSelection.hash")}
		n := int(r.u8("pcrSelection.sizeofSelect"))
		if r.err == nil && n > 8 {
			return nil, fmt.Errorf("%w: PCR select of %d bytes", ErrMalformed, n)
		}
		bits := r.take(n, "pcrSelection.pcrSelect")
		for j, v := range bits {
			for k := 0; k < 8; k++ {
				if v&(1<<k) != 0 {
					s.pcrs = append(s.pcrs, 8*j+k)
				}
			}
		}
		a.selections = append(a.selections, s)
	}
	a.pcrDigest = r.sized(64, "pcrDigest")
	r.end("TPMS_ATTEST")
	if r.err != nil {
		return nil, r.err
	}
	return a, nil
}

type signature struct {
	alg, hash uint16
	r, s      []byte // ECDSA
	sig       []byte // RSA
}

func parseSignature(b []byte) (*signature, error) {
	if len(b) > MaxSignatureSize {
		return nil, fmt.Errorf("%w: signature of %d bytes exceeds limit %d", ErrMalformed, len(b), MaxSignatureSize)
	}
	r := &reader{b: b}
	s := &signature{alg: r.u16("sigAlg")}
	switch s.alg {
	case algECDSA:
		s.hash = r.u16("signature hash")
		s.r = r.sized(66, "signatureR")
		s.s = r.sized(66, "signatureS")
	case algRSASSA, algRSAPSS:
		s.hash = r.u16("signature hash")
		s.sig = r.sized(512, "signature")
	default:
		if r.err == nil {
			return nil, fmt.Errorf("%w: signature algorithm 0x%04x is not ECDSA, RSASSA or RSAPSS", ErrQuote, s.alg)
		}
	}
	r.end("TPMT_SIGNATURE")
	if r.err != nil {
		return nil, r.err
	}
	return s, nil
}

// checkSignature verifies sig over data with the AK, and returns the hash
// the signature used.
func checkSignature(ak *Public, data []byte, sig *signature) (crypto.Hash, error) {
	h, ok := hashFor(sig.hash)
	if !ok {
		return 0, fmt.Errorf("%w: signature hash 0x%04x is not SHA-256/384/512", ErrQuote, sig.hash)
	}
	d := digest(h, data)
	switch key := ak.Key.(type) {
	case *ecdsa.PublicKey:
		if sig.alg != algECDSA {
			return 0, fmt.Errorf("%w: signature algorithm 0x%04x does not match the ECC AK", ErrQuote, sig.alg)
		}
		if !ecdsa.Verify(key, d, new(big.Int).SetBytes(sig.r), new(big.Int).SetBytes(sig.s)) {
			return 0, fmt.Errorf("%w: ECDSA signature does not verify with the AK", ErrQuote)
		}
	case *rsa.PublicKey:
		var err error
		switch sig.alg {
		case algRSASSA:
			err = rsa.VerifyPKCS1v15(key, h, d, sig.sig)
		case algRSAPSS:
			err = rsa.VerifyPSS(key, h, d, sig.sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		default:
			return 0, fmt.Errorf("%w: signature algorithm 0x%04x does not match the RSA AK", ErrQuote, sig.alg)
		}
		if err != nil {
			return 0, fmt.Errorf("%w: RSA signature does not verify with the AK", ErrQuote)
		}
	default:
		return 0, fmt.Errorf("%w: unsupported AK key type %T", ErrQuote, ak.Key)
	}
	return h, nil
}

// PCRDigest is the digest a TPM quote carries over the given PCR values:
// the hash h of the values concatenated in increasing PCR index order.
func PCRDigest(h crypto.Hash, pcrs map[int][]byte) []byte {
	idx := make([]int, 0, len(pcrs))
	for i := range pcrs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	parts := make([][]byte, len(idx))
	for k, i := range idx {
		parts[k] = pcrs[i]
	}
	return digest(h, parts...)
}

// VerifyQuote checks a TPM2_Quote made by a host and returns the verified
// PCR values and clock information. Every input comes from the network and
// is parsed defensively. The checks, all of which must pass:
//
//  1. akPublic (TPMT_PUBLIC or TPM2B_PUBLIC) is an acceptable AK (ParseAKPublic);
//     whether this AK is trusted for this host is the caller's decision.
//  2. sig (TPMT_SIGNATURE) matches the AK's type (ECDSA for ECC, RSASSA or
//     RSA-PSS for RSA), uses SHA-256/384/512, and verifies over quoted.
//  3. quoted (TPMS_ATTEST) has magic TPM_GENERATED_VALUE and type
//     TPM_ST_ATTEST_QUOTE, and nothing after the quote info.
//  4. extraData equals nonce (constant time); the nonce must be limits.MinNonceSize..
//     limits.MaxNonceSize (16..64) bytes.
//  5. the PCR selection is exactly one SHA-256 bank selecting exactly the
//     indices in pcrs, each a 32-byte value.
//  6. pcrDigest equals the hash (the signature's hash) of the given values
//     in increasing index order.
func VerifyQuote(akPublic, quoted, sig, nonce []byte, pcrs map[int][]byte) (*QuoteResult, error) {
	if err := limits.CheckNonceSize(len(nonce)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrQuote, err)
	}
	if len(pcrs) == 0 {
		return nil, fmt.Errorf("%w: no PCR values given", ErrQuote)
	}
	for i, v := range pcrs {
		if i < 0 || i > limits.MaxPCR {
			return nil, fmt.Errorf("%w: PCR index %d out of range 0..%d", ErrQuote, i, limits.MaxPCR)
		}
		if len(v) != 32 {
			return nil, fmt.Errorf("%w: PCR %d value has %d bytes, want 32 (SHA-256)", ErrQuote, i, len(v))
		}
	}
	ak, err := ParseAKPublic(akPublic)
	if err != nil {
		return nil, err
	}
	s, err := parseSignature(sig)
	if err != nil {
		return nil, fmt.Errorf("quote signature: %w", err)
	}
	h, err := checkSignature(ak, quoted, s)
	if err != nil {
		return nil, err
	}
	a, err := parseAttest(quoted)
	if err != nil {
		return nil, fmt.Errorf("quote attest: %w", err)
	}
	if len(a.extraData) != len(nonce) || subtle.ConstantTimeCompare(a.extraData, nonce) != 1 {
		return nil, fmt.Errorf("%w: nonce (extraData) does not match the challenge", ErrQuote)
	}
	if len(a.selections) != 1 || a.selections[0].hash != algSHA256 {
		return nil, fmt.Errorf("%w: quote must select exactly the SHA-256 PCR bank (got %d banks)", ErrQuote, len(a.selections))
	}
	sel := a.selections[0].pcrs
	if len(sel) != len(pcrs) {
		return nil, fmt.Errorf("%w: quote selects PCRs %v, %d values given", ErrQuote, sel, len(pcrs))
	}
	for _, i := range sel {
		if _, ok := pcrs[i]; !ok {
			return nil, fmt.Errorf("%w: quote selects PCR %d, which was not given", ErrQuote, i)
		}
	}
	want := PCRDigest(h, pcrs)
	if subtle.ConstantTimeCompare(want, a.pcrDigest) != 1 {
		return nil, fmt.Errorf("%w: PCR values do not match the quoted PCR digest", ErrQuote)
	}
	res := &QuoteResult{
		pcrs:            make(map[int][]byte, len(pcrs)),
		clock:           a.clock,
		firmwareVersion: a.firmware,
		qualifiedSigner: bytes.Clone(a.qualifiedSigner),
		akName:          bytes.Clone(ak.Name),
	}
	for i, v := range pcrs {
		res.pcrs[i] = bytes.Clone(v)
	}
	return res, nil
}
