// Package verify is the TPM-less verifier side of Bulwark's TPM protocol:
// it parses the TPM's own marshalled structures received from a host
// (TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE), checks quotes, makes
// credentials for ActivateCredential and checks EK certificates.
//
// It needs no TPM and no cgo; attestd imports it. Every parser here reads
// untrusted bytes from the network: it enforces size limits, rejects
// trailing data and never panics (see the fuzz tests).
package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// TPM algorithm identifiers and other constants (TPM 2.0 Part 2).
const (
	algRSA       uint16 = 0x0001
	algSHA1      uint16 = 0x0004
	algAES       uint16 = 0x0006
	algKeyedHash uint16 = 0x0008
	algSHA256    uint16 = 0x000B
	algSHA384    uint16 = 0x000C
	algSHA512    uint16 = 0x000D
	algNull      uint16 = 0x0010
	algRSASSA    uint16 = 0x0014
	algRSAES     uint16 = 0x0015
	algRSAPSS    uint16 = 0x0016
	algOAEP      uint16 = 0x0017
	algECDSA     uint16 = 0x0018
	algECDH      uint16 = 0x0019
	algECDAA     uint16 = 0x001A
	algSM2       uint16 = 0x001B
	algECSCHNORR uint16 = 0x001C
	algECC       uint16 = 0x0023
	algCFB       uint16 = 0x0043

	curveP256 uint16 = 0x0003
	curveP384 uint16 = 0x0004
	curveP521 uint16 = 0x0005

	attrFixedTPM            uint32 = 1 << 1
	attrFixedParent         uint32 = 1 << 4
	attrSensitiveDataOrigin uint32 = 1 << 5
	attrUserWithAuth        uint32 = 1 << 6
	attrAdminWithPolicy     uint32 = 1 << 7
	attrRestricted          uint32 = 1 << 16
	attrDecrypt             uint32 = 1 << 17
	attrSign                uint32 = 1 << 18
)

// Size limits for structures received from a host. They are generous for
// what a TPM produces (RSA-4096 at most) and small enough to bound work.
const (
	MaxPublicSize    = 1024     // TPMT_PUBLIC / TPM2B_PUBLIC
	MaxAttestSize    = 1024     // TPMS_ATTEST
	MaxSignatureSize = 1024     // TPMT_SIGNATURE
	MaxCertSize      = 16 << 10 // an EK certificate in DER
)

// Errors callers may branch on.
var (
	// ErrMalformed means bytes from the host do not parse as the TPM
	// structure they claim to be.
	ErrMalformed = errors.New("malformed TPM structure")
	// ErrNotAK means a public area parsed but is not an acceptable
	// attestation key (restricted signing key created inside a TPM).
	ErrNotAK = errors.New("not an acceptable attestation key")
	// ErrNotEK means a public area is not an acceptable endorsement key.
	ErrNotEK = errors.New("not an acceptable endorsement key")
	// ErrQuote means a quote failed verification; the wrapped message says
	// which check.
	ErrQuote = errors.New("quote verification failed")
)

// Public is a parsed and validated TPMT_PUBLIC of an asymmetric key.
type Public struct {
	// Raw is the exact TPMT_PUBLIC bytes the Name is computed over.
	Raw []byte
	// Name is nameAlg || H_nameAlg(Raw), the key's TPM Name.
	Name []byte
	// Key is the public key: *ecdsa.PublicKey or *rsa.PublicKey.
	Key crypto.PublicKey
	// Attributes are the TPMA_OBJECT bits.
	Attributes uint32
	// NameAlg is the TPM hash algorithm of the Name.
	NameAlg uint16

	typ        uint16
	authPolicy []byte
	symAlg     uint16 // symmetric algorithm of a storage/decrypt key (TPM_ALG_NULL if none)
	symBits    uint16
	symMode    uint16
	scheme     uint16 // signing/encryption scheme (TPM_ALG_NULL if none)
	schemeHash uint16
	rsaBits    uint16
	rsaExp     uint32
	curve      uint16
	unique     []byte // RSA modulus, or X||Y for ECC (with their lengths kept below)
	eccX, eccY []byte
}

// reader is a sticky-error big-endian reader over untrusted bytes.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, a...)...)
	}
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.fail("%s: need %d bytes, have %d", what, n, len(r.b))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8(what string) uint8 {
	b := r.take(1, what)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) u16(what string) uint16 {
	b := r.take(2, what)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}

func (r *reader) u32(what string) uint32 {
	b := r.take(4, what)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (r *reader) u64(what string) uint64 {
	b := r.take(8, what)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// sized reads a TPM2B: a 16-bit size then that many bytes, at most max.
func (r *reader) sized(max int, what string) []byte {
	n := int(r.u16(what + " size"))
	if r.err != nil {
		return nil
	}
	if n > max {
		r.fail("%s: size %d exceeds limit %d", what, n, max)
		return nil
	}
	return r.take(n, what)
}

func (r *reader) end(what string) {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%s: %d trailing bytes", what, len(r.b))
	}
}

// hashFor maps a TPM hash algorithm to a Go hash (SHA-1 is refused).
func hashFor(alg uint16) (crypto.Hash, bool) {
	switch alg {
	case algSHA256:
		return crypto.SHA256, true
	case algSHA384:
		return crypto.SHA384, true
	case algSHA512:
		return crypto.SHA512, true
	}
	return 0, false
}

func digest(h crypto.Hash, parts ...[]byte) []byte {
	var hh interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}
	switch h {
	case crypto.SHA384:
		hh = sha512.New384()
	case crypto.SHA512:
		hh = sha512.New()
	default:
		hh = sha256.New()
	}
	for _, p := range parts {
		hh.Write(p)
	}
	return hh.Sum(nil)
}

// unwrap2B accepts a TPMT_PUBLIC or a TPM2B_PUBLIC (size-prefixed) and
// returns the TPMT_PUBLIC bytes. The forms cannot be confused: a TPMT_PUBLIC
// whose first two bytes (its type, 0x0001 or 0x0023) equal its remaining
// length would be far too short to be a valid key.
func unwrap2B(b []byte) []byte {
	if len(b) >= 2 && int(binary.BigEndian.Uint16(b)) == len(b)-2 {
		return b[2:]
	}
	return b
}

// ParsePublic parses an asymmetric key's public area (TPMT_PUBLIC or
// TPM2B_PUBLIC; RSA or ECC on NIST P-256/P-384/P-521) without judging what
// the key may be used for. Use ParseAKPublic or ParseEKPublic for keys
// received from a host.
func ParsePublic(b []byte) (*Public, error) {
	if len(b) > MaxPublicSize+2 {
		return nil, fmt.Errorf("%w: public area of %d bytes exceeds limit %d", ErrMalformed, len(b), MaxPublicSize)
	}
	raw := unwrap2B(b)
	r := &reader{b: raw}
	p := &Public{Raw: append([]byte(nil), raw...)}
	p.typ = r.u16("type")
	p.NameAlg = r.u16("nameAlg")
	p.Attributes = r.u32("objectAttributes")
	p.authPolicy = r.sized(64, "authPolicy")
	if r.err != nil {
		return nil, r.err
	}
	nameHash, ok := hashFor(p.NameAlg)
	if !ok {
		return nil, fmt.Errorf("%w: nameAlg 0x%04x is not SHA-256/384/512", ErrMalformed, p.NameAlg)
	}
	// Symmetric definition (TPMT_SYM_DEF_OBJECT).
	p.symAlg = r.u16("symmetric.algorithm")
	if p.symAlg != algNull {
		p.symBits = r.u16("symmetric.keyBits")
		p.symMode = r.u16("symmetric.mode")
	}
	switch p.typ {
	case algRSA:
		p.scheme = r.u16("rsa scheme")
		switch p.scheme {
		case algNull, algRSAES:
		case algRSASSA, algRSAPSS, algOAEP:
			p.schemeHash = r.u16("rsa scheme hash")
		default:
			r.fail("unsupported RSA scheme 0x%04x", p.scheme)
		}
		p.rsaBits = r.u16("rsa keyBits")
		p.rsaExp = r.u32("rsa exponent")
		p.unique = r.sized(512, "rsa modulus")
		r.end("TPMT_PUBLIC")
		if r.err != nil {
			return nil, r.err
		}
		if p.rsaBits < 2048 || p.rsaBits > 4096 || int(p.rsaBits) != 8*len(p.unique) {
			return nil, fmt.Errorf("%w: RSA key of %d bits with a %d-byte modulus (need 2048..4096 and matching)", ErrMalformed, p.rsaBits, len(p.unique))
		}
		if p.unique[0]&0x80 == 0 {
			return nil, fmt.Errorf("%w: RSA modulus shorter than its declared %d bits", ErrMalformed, p.rsaBits)
		}
		e := p.rsaExp
		if e == 0 {
			e = 65537
		}
		if e < 3 || e&1 == 0 || e > 1<<31-1 {
			return nil, fmt.Errorf("%w: RSA exponent %d is not acceptable", ErrMalformed, e)
		}
		p.Key = &rsa.PublicKey{N: new(big.Int).SetBytes(p.unique), E: int(e)}
	case algECC:
		p.scheme = r.u16("ecc scheme")
		switch p.scheme {
		case algNull:
		case algECDSA, algECDH, algSM2, algECSCHNORR:
			p.schemeHash = r.u16("ecc scheme hash")
		case algECDAA:
			p.schemeHash = r.u16("ecc scheme hash")
			r.u16("ecdaa count")
		default:
			r.fail("unsupported ECC scheme 0x%04x", p.scheme)
		}
		p.curve = r.u16("curveID")
		if kdf := r.u16("kdf scheme"); kdf != algNull {
			r.u16("kdf hash")
		}
		p.eccX = r.sized(66, "ecc x")
		p.eccY = r.sized(66, "ecc y")
		r.end("TPMT_PUBLIC")
		if r.err != nil {
			return nil, r.err
		}
		var curve elliptic.Curve
		switch p.curve {
		case curveP256:
			curve = elliptic.P256()
		case curveP384:
			curve = elliptic.P384()
		case curveP521:
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("%w: ECC curve 0x%04x is not NIST P-256/384/521", ErrMalformed, p.curve)
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(p.eccX) > size || len(p.eccY) > size || len(p.eccX) == 0 || len(p.eccY) == 0 {
			return nil, fmt.Errorf("%w: ECC point coordinates of %d/%d bytes for a %d-byte curve", ErrMalformed, len(p.eccX), len(p.eccY), size)
		}
		// Build the uncompressed point and let crypto/ecdh validate it is on the curve.
		pt := make([]byte, 1+2*size)
		pt[0] = 4
		copy(pt[1+size-len(p.eccX):1+size], p.eccX)
		copy(pt[1+2*size-len(p.eccY):], p.eccY)
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, pt)
		if err != nil {
			return nil, fmt.Errorf("%w: ECC point: %v", ErrMalformed, err)
		}
		p.Key = pub
		p.unique = pt[1:]
	default:
		return nil, fmt.Errorf("%w: key type 0x%04x is not RSA or ECC", ErrMalformed, p.typ)
	}
	h := digest(nameHash, p.Raw)
	p.Name = binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(h)), p.NameAlg)
	p.Name = append(p.Name, h...)
	return p, nil
}

const akRequired = attrFixedTPM | attrFixedParent | attrSensitiveDataOrigin | attrRestricted | attrSign

// ParseAKPublic parses an attestation key's public area (TPMT_PUBLIC or
// TPM2B_PUBLIC) and checks that it is a restricted signing key generated in
// and bound to its TPM: fixedTPM, fixedParent, sensitiveDataOrigin,
// restricted and sign set, decrypt clear; ECC on NIST P-256 with ECDSA, or
// RSA of 2048 bits or more with RSASSA or RSA-PSS; a scheme hash of SHA-256
// or stronger.
func ParseAKPublic(b []byte) (*Public, error) {
	p, err := ParsePublic(b)
	if err != nil {
		return nil, fmt.Errorf("AK public: %w", err)
	}
	if missing := akRequired &^ p.Attributes; missing != 0 {
		return nil, fmt.Errorf("AK public: %w: attributes 0x%08x lack %s", ErrNotAK, p.Attributes, attrNames(missing))
	}
	if p.Attributes&attrDecrypt != 0 {
		return nil, fmt.Errorf("AK public: %w: decrypt attribute set", ErrNotAK)
	}
	switch p.typ {
	case algECC:
		if p.curve != curveP256 {
			return nil, fmt.Errorf("AK public: %w: ECC curve 0x%04x, want NIST P-256", ErrNotAK, p.curve)
		}
		if p.scheme != algECDSA {
			return nil, fmt.Errorf("AK public: %w: ECC scheme 0x%04x, want ECDSA", ErrNotAK, p.scheme)
		}
	case algRSA:
		if p.scheme != algRSASSA && p.scheme != algRSAPSS {
			return nil, fmt.Errorf("AK public: %w: RSA scheme 0x%04x, want RSASSA or RSAPSS", ErrNotAK, p.scheme)
		}
	}
	if _, ok := hashFor(p.schemeHash); !ok {
		return nil, fmt.Errorf("AK public: %w: scheme hash 0x%04x is not SHA-256/384/512", ErrNotAK, p.schemeHash)
	}
	return p, nil
}

const ekRequired = attrFixedTPM | attrFixedParent | attrSensitiveDataOrigin | attrRestricted | attrDecrypt

// ParseEKPublic parses an endorsement key's public area (TPMT_PUBLIC or
// TPM2B_PUBLIC) and checks it is a restricted decryption key bound to its
// TPM (fixedTPM, fixedParent, sensitiveDataOrigin, restricted, decrypt; not
// sign) with an AES-CFB symmetric definition, as the TCG EK templates have;
// RSA of 2048 bits or more, or ECC.
func ParseEKPublic(b []byte) (*Public, error) {
	p, err := ParsePublic(b)
	if err != nil {
		return nil, fmt.Errorf("EK public: %w", err)
	}
	if missing := ekRequired &^ p.Attributes; missing != 0 {
		return nil, fmt.Errorf("EK public: %w: attributes 0x%08x lack %s", ErrNotEK, p.Attributes, attrNames(missing))
	}
	if p.Attributes&attrSign != 0 {
		return nil, fmt.Errorf("EK public: %w: sign attribute set", ErrNotEK)
	}
	if p.symAlg != algAES || p.symMode != algCFB || (p.symBits != 128 && p.symBits != 256) {
		return nil, fmt.Errorf("EK public: %w: symmetric definition alg 0x%04x/%d bits/mode 0x%04x, want AES-128/256-CFB", ErrNotEK, p.symAlg, p.symBits, p.symMode)
	}
	if p.scheme != algNull {
		return nil, fmt.Errorf("EK public: %w: a restricted decryption key has scheme 0x%04x, want NULL", ErrNotEK, p.scheme)
	}
	if err := checkEKTemplate(p); err != nil {
		return nil, fmt.Errorf("EK public: %w", err)
	}
	return p, nil
}

// checkEKTemplate requires the one encoding of the EK's key: a TCG EK
// Credential Profile low-range template (L-1 RSA-2048 or L-2 ECC P-256, the
// EKs TPMs ship certificates for and the launcher creates) with the key in
// its unique field, byte for byte. A host is named by a hash of these bytes
// (NodeID) while an EK certificate binds only the key, so any latitude here
// (another attribute bit, authPolicy, exponent 65537 for 0) would give one
// TPM many node ids: a revoked host could enroll again under a new one.
func checkEKTemplate(p *Public) error {
	var want tpm2.TPMTPublic
	ok := false
	switch p.typ {
	case algRSA:
		want, ok = tpm2.RSAEKTemplate, true
		want.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: p.unique})
	case algECC:
		const size = 32 // P-256; another curve fails the comparison below
		if len(p.eccX) > size || len(p.eccY) > size {
			break
		}
		x, y := make([]byte, size), make([]byte, size)
		copy(x[size-len(p.eccX):], p.eccX)
		copy(y[size-len(p.eccY):], p.eccY)
		want, ok = tpm2.ECCEKTemplate, true
		want.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}})
	}
	if !ok || !bytes.Equal(tpm2.Marshal(&want), p.Raw) {
		return fmt.Errorf("%w: not the TCG EK template L-1 (RSA-2048) or L-2 (ECC P-256) holding its key, byte for byte "+
			"(got attributes 0x%08x, nameAlg 0x%04x, a %d-byte authPolicy); hosts are named by these bytes, so only the canonical form enrolls",
			ErrNotEK, p.Attributes, p.NameAlg, len(p.authPolicy))
	}
	return nil
}

func attrNames(bits uint32) string {
	names := []struct {
		bit  uint32
		name string
	}{
		{attrFixedTPM, "fixedTPM"}, {attrFixedParent, "fixedParent"},
		{attrSensitiveDataOrigin, "sensitiveDataOrigin"}, {attrRestricted, "restricted"},
		{attrDecrypt, "decrypt"}, {attrSign, "sign"},
	}
	s := ""
	for _, n := range names {
		if bits&n.bit != 0 {
			if s != "" {
				s += ","
			}
			s += n.name
		}
	}
	return s
}
