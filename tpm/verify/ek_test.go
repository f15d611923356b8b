package verify

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/google/go-tpm/tpm2"
)

// rsaEK and eccEK are the TCG low-range EK templates (L-1, L-2) holding a
// freshly generated key, changed by edit.
func rsaEK(t *testing.T, edit func(*tpm2.TPMTPublic)) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := tpm2.RSAEKTemplate
	p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.FillBytes(make([]byte, 256))})
	if edit != nil {
		edit(&p)
	}
	return tpm2.Marshal(p)
}

func eccEK(t *testing.T, edit func(*tpm2.TPMTPublic), x0Zero bool) []byte {
	t.Helper()
	for {
		k, err := ecdh.P256().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pt := k.PublicKey().Bytes()
		x, y := pt[1:33], pt[33:]
		if x0Zero && x[0] != 0 {
			continue
		}
		if x0Zero {
			x = x[1:] // the same point, its X without the leading zero byte
		}
		p := tpm2.ECCEKTemplate
		p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}})
		if edit != nil {
			edit(&p)
		}
		return tpm2.Marshal(p)
	}
}

// TestEKPublicCanonical: one TPM key has one accepted encoding, so one
// node id. An EK certificate binds only the key; without this a revoked
// host could enroll again with its EK re-encoded (another attribute bit,
// authPolicy or exponent) under a new node id.
func TestEKPublicCanonical(t *testing.T) {
	rsaParms := func(f func(*tpm2.TPMSRSAParms)) func(*tpm2.TPMTPublic) {
		return func(p *tpm2.TPMTPublic) {
			parms, _ := p.Parameters.RSADetail()
			cp := *parms
			f(&cp)
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &cp)
		}
	}
	for _, tc := range []struct {
		name string
		ek   []byte
		ok   bool
	}{
		{"L-1 RSA-2048", rsaEK(t, nil), true},
		{"L-2 ECC P-256", eccEK(t, nil, false), true},
		{"noDA added", rsaEK(t, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.NoDA = true }), false},
		{"userWithAuth added", eccEK(t, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.UserWithAuth = true }, false), false},
		{"another authPolicy", rsaEK(t, func(p *tpm2.TPMTPublic) {
			p.AuthPolicy = tpm2.TPM2BDigest{Buffer: make([]byte, 32)}
		}), false},
		{"no authPolicy", rsaEK(t, func(p *tpm2.TPMTPublic) { p.AuthPolicy = tpm2.TPM2BDigest{} }), false},
		{"exponent 65537 written out", rsaEK(t, rsaParms(func(r *tpm2.TPMSRSAParms) { r.Exponent = 65537 })), false},
		{"AES-256", rsaEK(t, rsaParms(func(r *tpm2.TPMSRSAParms) {
			r.Symmetric.KeyBits = tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(256))
		})), false},
		{"nameAlg SHA-384", rsaEK(t, func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA384 }), false},
		{"ECC X without its leading zero", eccEK(t, nil, true), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseEKPublic(tc.ek)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				// TPM2B_PUBLIC (size-prefixed) is the same EK and node id.
				wrapped := binary.BigEndian.AppendUint16(nil, uint16(len(tc.ek)))
				p2, err := ParseEKPublic(append(wrapped, tc.ek...))
				if err != nil || limits.NodeID(p2.Raw) != limits.NodeID(p.Raw) {
					t.Fatalf("TPM2B_PUBLIC form: %v, node ids %s %s", err, limits.NodeID(p.Raw), limits.NodeID(p2.Raw))
				}
				return
			}
			if !errors.Is(err, ErrNotEK) {
				t.Fatalf("accepted or wrong error: %v", err)
			}
		})
	}
}
