// Package softtpm is the TPM side of Bulwark's attestation protocol done in
// software, so that one load-generator process can play thousands of hosts.
//
// It exists for load generation only (internal/load, cmd/bulwark-load). It
// is never used by the launcher or by attestd: its keys live in ordinary
// process memory, so a softtpm "quote" proves nothing about a real machine.
// What it does produce are the TPM's own wire structures — TPMT_PUBLIC for the
// EK and AK, TPMS_ATTEST and TPMT_SIGNATURE for quotes, and credential
// activation per TPM 2.0 Part 1 §24 — byte-compatible with a real TPM, so that
// attestd's verifier cannot tell the difference and does the same work per
// request as it would for a real fleet.
//
// A TPM is safe for concurrent use.
package softtpm

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/google/go-tpm/tpm2"
)

// EKType selects the endorsement key algorithm.
type EKType int

const (
	// EKECC is an ECC NIST P-256 EK (TCG EK Credential Profile template
	// L-2 / go-tpm's ECCEKTemplate). Key generation takes microseconds, so
	// it is what the load generator uses by default for large fleets.
	EKECC EKType = iota
	// EKRSA is an RSA-2048 EK (template L-1 / go-tpm's RSAEKTemplate), the
	// common default on real TPMs. Generating one costs tens of
	// milliseconds.
	EKRSA
)

func (t EKType) String() string {
	switch t {
	case EKECC:
		return "ecc"
	case EKRSA:
		return "rsa"
	}
	return fmt.Sprintf("EKType(%d)", int(t))
}

// ParseEKType parses "ecc" or "rsa".
func ParseEKType(s string) (EKType, error) {
	switch s {
	case "ecc", "ECC", "ecc-p256":
		return EKECC, nil
	case "rsa", "RSA", "rsa-2048":
		return EKRSA, nil
	}
	return 0, fmt.Errorf("softtpm: unknown EK type %q (want ecc or rsa)", s)
}

// Options configures New. The zero value is an ECC EK, the launch PCR
// limits.DefaultLaunchPCR and the default host PCRs.
type Options struct {
	EK EKType
	// HostPCRs are extended at creation, in PCR order and then slice order,
	// to stand in for what firmware and the boot loader measure on a real
	// host. nil means DefaultHostPCRs(); an empty non-nil map means none.
	HostPCRs map[int][][]byte
	// Now is the clock the quote's TPMS_CLOCK_INFO is derived from
	// (milliseconds since New). Default time.Now.
	Now func() time.Time
	// FirmwareVersion is reported in quotes. Default 0x20260101.
	FirmwareVersion uint64
}

// DefaultHostPCRs returns the boot measurements every simulated host starts
// with: the same fixed digests on every host, like a homogeneous fleet, so a
// policy can pin the host PCR values (see HostPCRValues).
func DefaultHostPCRs() map[int][][]byte {
	d := func(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
	return map[int][][]byte{
		0: {d("bulwark-load: firmware (CRTM, POST BIOS)")},
		4: {d("bulwark-load: boot loader"), d("bulwark-load: host kernel")},
		7: {d("bulwark-load: secure boot state")},
	}
}

// HostPCRValues returns the SHA-256 PCR values a fresh TPM created with the
// given host measurements has (nil: DefaultHostPCRs), for writing policy.
func HostPCRValues(host map[int][][]byte) map[int][]byte {
	if host == nil {
		host = DefaultHostPCRs()
	}
	bank := initialBank()
	out := map[int][]byte{}
	for pcr, ds := range host {
		if pcr < 0 || pcr >= limits.NumPCRs {
			continue
		}
		for _, d := range ds {
			bank[pcr] = extend(bank[pcr], d)
		}
		v := bank[pcr]
		out[pcr] = v[:]
	}
	return out
}

// TPM is one simulated host TPM: an EK, a restricted ECC P-256 signing AK
// and a SHA-256 PCR bank. Create with New.
type TPM struct {
	ekType   EKType
	ekRSA    *rsa.PrivateKey
	ekECDH   *ecdh.PrivateKey
	ekPublic []byte // marshalled TPMT_PUBLIC
	ekName   []byte
	ekCert   []byte // DER, set by EKCA.Certify; guarded by mu

	ak       *ecdsa.PrivateKey
	akPublic []byte // marshalled TPMT_PUBLIC
	akName   []byte // nameAlg || SHA-256(TPMT_PUBLIC)

	now      func() time.Time
	start    time.Time
	firmware uint64

	mu   sync.Mutex
	pcrs [limits.NumPCRs][sha256.Size]byte
}

// New creates a simulated TPM with fresh keys.
func New(opts Options) (*TPM, error) {
	t := &TPM{ekType: opts.EK, now: opts.Now, firmware: opts.FirmwareVersion}
	if t.now == nil {
		t.now = time.Now
	}
	if t.firmware == 0 {
		t.firmware = 0x20260101
	}
	t.start = t.now()
	t.pcrs = initialBank()

	var ekPub tpm2.TPMTPublic
	switch opts.EK {
	case EKRSA:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("softtpm: generating RSA EK: %w", err)
		}
		t.ekRSA = k
		ekPub = tpm2.RSAEKTemplate
		ekPub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.FillBytes(make([]byte, 256))})
		// Exponent 0 in TPMS_RSA_PARMS means the default 65537.
		if k.E != 65537 {
			return nil, errors.New("softtpm: RSA EK exponent is not 65537")
		}
	case EKECC:
		k, err := ecdh.P256().GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("softtpm: generating ECC EK: %w", err)
		}
		t.ekECDH = k
		x, y := splitPoint(k.PublicKey().Bytes())
		ekPub = tpm2.ECCEKTemplate
		ekPub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x},
			Y: tpm2.TPM2BECCParameter{Buffer: y},
		})
	default:
		return nil, fmt.Errorf("softtpm: unknown EK type %d", int(opts.EK))
	}
	t.ekPublic = tpm2.Marshal(ekPub)
	t.ekName = objectName(t.ekPublic)

	ak, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("softtpm: generating AK: %w", err)
	}
	t.ak = ak
	t.akPublic = tpm2.Marshal(AKTemplate(ak.PublicKey.X, ak.PublicKey.Y))
	t.akName = objectName(t.akPublic)

	host := opts.HostPCRs
	if host == nil {
		host = DefaultHostPCRs()
	}
	for pcr := range host {
		if pcr < 0 || pcr >= limits.NumPCRs {
			return nil, fmt.Errorf("softtpm: host PCR %d out of range 0..%d", pcr, limits.NumPCRs-1)
		}
	}
	for pcr := 0; pcr < limits.NumPCRs; pcr++ {
		for _, d := range host[pcr] {
			if err := t.Extend(pcr, d); err != nil {
				return nil, fmt.Errorf("softtpm: host PCR %d: %w", pcr, err)
			}
		}
	}
	return t, nil
}

// AKTemplate returns the TPMT_PUBLIC of a restricted ECC P-256 signing key
// with the attributes a real TPM-resident AK has (fixedTPM, fixedParent,
// sensitiveDataOrigin, userWithAuth, restricted, sign; ECDSA-SHA256 scheme)
// and the given public point.
func AKTemplate(x, y *big.Int) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			Restricted:          true,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x.FillBytes(make([]byte, 32))},
			Y: tpm2.TPM2BECCParameter{Buffer: y.FillBytes(make([]byte, 32))},
		}),
	}
}

// EKType reports the endorsement key algorithm.
func (t *TPM) EKType() EKType { return t.ekType }

// EKPublic returns the EK's marshalled TPMT_PUBLIC (the standard EK
// template's attributes and PolicySecret(RH_ENDORSEMENT) auth policy).
func (t *TPM) EKPublic() []byte { return clone(t.ekPublic) }

// EKName returns the EK's TPM name (nameAlg || digest of its TPMT_PUBLIC).
func (t *TPM) EKName() []byte { return clone(t.ekName) }

// AKPublic returns the AK's marshalled TPMT_PUBLIC.
func (t *TPM) AKPublic() []byte { return clone(t.akPublic) }

// AKName returns the AK's TPM name: 0x000B (SHA-256) || SHA-256(TPMT_PUBLIC),
// the bytes credential protection binds to and quotes carry as
// qualifiedSigner.
func (t *TPM) AKName() []byte { return clone(t.akName) }

// AKPublicKey returns the AK's public key.
func (t *TPM) AKPublicKey() *ecdsa.PublicKey { return &t.ak.PublicKey }

// Extend extends a SHA-256 digest into a PCR: PCR = SHA-256(PCR || digest).
func (t *TPM) Extend(pcr int, digest []byte) error {
	if pcr < 0 || pcr >= limits.NumPCRs {
		return fmt.Errorf("softtpm: extend: PCR %d out of range 0..%d", pcr, limits.NumPCRs-1)
	}
	if len(digest) != sha256.Size {
		return fmt.Errorf("softtpm: extend: digest is %d bytes, want %d (SHA-256)", len(digest), sha256.Size)
	}
	t.mu.Lock()
	t.pcrs[pcr] = extend(t.pcrs[pcr], digest)
	t.mu.Unlock()
	return nil
}

// PCR returns the current SHA-256 value of a PCR.
func (t *TPM) PCR(pcr int) ([]byte, error) {
	if pcr < 0 || pcr >= limits.NumPCRs {
		return nil, fmt.Errorf("softtpm: PCR %d out of range 0..%d", pcr, limits.NumPCRs-1)
	}
	t.mu.Lock()
	v := t.pcrs[pcr]
	t.mu.Unlock()
	return v[:], nil
}

// ReadPCRs returns the current values of the given PCRs.
func (t *TPM) ReadPCRs(pcrs []int) (map[int][]byte, error) {
	out := make(map[int][]byte, len(pcrs))
	for _, p := range pcrs {
		v, err := t.PCR(p)
		if err != nil {
			return nil, err
		}
		out[p] = v
	}
	return out, nil
}

func initialBank() [limits.NumPCRs][sha256.Size]byte {
	var b [limits.NumPCRs][sha256.Size]byte
	// PC Client: PCRs 17-22 (the dynamic-launch PCRs) start at all ones.
	for p := 17; p <= 22; p++ {
		for i := range b[p] {
			b[p][i] = 0xff
		}
	}
	return b
}

func extend(old [sha256.Size]byte, digest []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(old[:])
	h.Write(digest)
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// objectName is the TPM name of an object whose TPMT_PUBLIC (name algorithm
// SHA-256) is pub.
func objectName(pub []byte) []byte {
	d := sha256.Sum256(pub)
	return append([]byte{byte(tpm2.TPMAlgSHA256 >> 8), byte(tpm2.TPMAlgSHA256)}, d[:]...)
}

// splitPoint splits an uncompressed P-256 point (0x04 || X || Y).
func splitPoint(b []byte) (x, y []byte) {
	b = b[1:]
	return clone(b[:len(b)/2]), clone(b[len(b)/2:])
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
