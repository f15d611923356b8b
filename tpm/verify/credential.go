package verify

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
)

// MakeCredential encrypts secret to the endorsement key ekPublic
// (TPMT_PUBLIC or TPM2B_PUBLIC, checked by ParseEKPublic) and binds it to
// the key Name akName (from ParseAKPublic), as TPM2_MakeCredential does. Only
// a TPM holding that EK, and a loaded key with that exact Name, can recover
// secret with TPM2_ActivateCredential.
//
// credentialBlob is the TPMS_ID_OBJECT (the contents of a TPM2B_ID_OBJECT)
// and encryptedSecret the contents of a TPM2B_ENCRYPTED_SECRET. secret must
// be 1 to digest-size bytes of the EK's name algorithm (32 for SHA-256).
func MakeCredential(ekPublic, akName, secret []byte) (credentialBlob, encryptedSecret []byte, err error) {
	return makeCredential(rand.Reader, ekPublic, akName, secret)
}

func makeCredential(rnd io.Reader, ekPublic, akName, secret []byte) ([]byte, []byte, error) {
	ek, err := ParseEKPublic(ekPublic)
	if err != nil {
		return nil, nil, err
	}
	if err := checkName(akName); err != nil {
		return nil, nil, fmt.Errorf("AK name: %w", err)
	}
	h, _ := hashFor(ek.NameAlg)
	if len(secret) == 0 || len(secret) > h.Size() {
		return nil, nil, fmt.Errorf("credential secret of %d bytes, want 1..%d", len(secret), h.Size())
	}
	pub, err := ek.tpm2Public()
	if err != nil {
		return nil, nil, err
	}
	key, err := tpm2.ImportEncapsulationKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("EK public: %w", err)
	}
	blob, enc, err := tpm2.CreateCredential(rnd, key, akName, secret)
	if err != nil {
		return nil, nil, fmt.Errorf("making credential: %w", err)
	}
	return blob, enc, nil
}

// checkName checks a TPM Name of an object: a hash algorithm then a digest
// of that algorithm's size.
func checkName(name []byte) error {
	if len(name) < 2 {
		return fmt.Errorf("%w: name of %d bytes", ErrMalformed, len(name))
	}
	h, ok := hashFor(binary.BigEndian.Uint16(name))
	if !ok {
		return fmt.Errorf("%w: name algorithm 0x%04x is not SHA-256/384/512", ErrMalformed, binary.BigEndian.Uint16(name))
	}
	if len(name) != 2+h.Size() {
		return fmt.Errorf("%w: name of %d bytes for its algorithm, want %d", ErrMalformed, len(name), 2+h.Size())
	}
	return nil
}

// tpm2Public rebuilds a go-tpm public area for a validated EK from the
// fields this package parsed, so go-tpm's reflective unmarshaller never
// sees bytes from the network.
func (p *Public) tpm2Public() (*tpm2.TPMTPublic, error) {
	sym := tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(p.symBits)),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
	}
	out := &tpm2.TPMTPublic{NameAlg: tpm2.TPMAlgID(p.NameAlg)}
	switch p.typ {
	case algRSA:
		out.Type = tpm2.TPMAlgRSA
		out.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: sym,
			Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
			KeyBits:   tpm2.TPMKeyBits(p.rsaBits),
			Exponent:  p.rsaExp,
		})
		out.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: p.unique})
	case algECC:
		out.Type = tpm2.TPMAlgECC
		out.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: sym,
			Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
			CurveID:   tpm2.TPMECCCurve(p.curve),
			KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		})
		out.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: p.eccX},
			Y: tpm2.TPM2BECCParameter{Buffer: p.eccY},
		})
	default:
		return nil, fmt.Errorf("%w: key type 0x%04x", ErrNotEK, p.typ)
	}
	return out, nil
}
