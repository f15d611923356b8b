package tpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"encoding/asn1"
	"fmt"
	"io"
	"math/big"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Signer returns a crypto.Signer backed by Bulwark's persistent,
// non-restricted ECC P-256 signing key at SignerHandle (created on first
// use). Its signatures are ASN.1 DER ECDSA, as ecdsa.VerifyASN1 expects;
// digests must be SHA-256, SHA-384 or SHA-512. The private key never
// leaves the TPM. Sign, which has no context, gives the TPM one minute.
func (t *TPM) Signer(ctx context.Context) (crypto.Signer, error) {
	var pub *ecdsa.PublicKey
	var name tpm2.TPM2BName
	err := t.do(ctx, func(tp transport.TPM) error {
		k, err := persistentKey(tp, SignerHandle, tpm2.TPMRHOwner, signerTemplate, true)
		if err != nil {
			return fmt.Errorf("signing key: %w", err)
		}
		p, err := tpm2.Pub(k.pub)
		if err != nil {
			return fmt.Errorf("signing key: %w", err)
		}
		var ok bool
		if pub, ok = p.(*ecdsa.PublicKey); !ok {
			return fmt.Errorf("signing key: unexpected %T", p)
		}
		name = k.name
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &signer{t: t, pub: pub, name: name}, nil
}

type signer struct {
	t    *TPM
	pub  *ecdsa.PublicKey
	name tpm2.TPM2BName
}

func (s *signer) Public() crypto.PublicKey { return s.pub }

// Sign signs digest with the TPM key. rand is unused: the TPM draws its own
// nonce.
func (s *signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	var alg tpm2.TPMIAlgHash
	switch opts.HashFunc() {
	case crypto.SHA256:
		alg = tpm2.TPMAlgSHA256
	case crypto.SHA384:
		alg = tpm2.TPMAlgSHA384
	case crypto.SHA512:
		alg = tpm2.TPMAlgSHA512
	default:
		return nil, fmt.Errorf("tpm signer: unsupported hash %v (want SHA-256/384/512)", opts.HashFunc())
	}
	if len(digest) != opts.HashFunc().Size() {
		return nil, fmt.Errorf("tpm signer: digest of %d bytes for %v", len(digest), opts.HashFunc())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var der []byte
	err := s.t.do(ctx, func(tp transport.TPM) error {
		rsp, err := tpm2.Sign{
			KeyHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(SignerHandle), Name: s.name, Auth: tpm2.PasswordAuth(nil)},
			Digest:    tpm2.TPM2BDigest{Buffer: digest},
			InScheme: tpm2.TPMTSigScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: alg}),
			},
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
		}.Execute(tp)
		if err != nil {
			return fmt.Errorf("tpm signer: %w", err)
		}
		sig, err := rsp.Signature.Signature.ECDSA()
		if err != nil {
			return fmt.Errorf("tpm signer: %w", err)
		}
		der, err = asn1.Marshal(struct{ R, S *big.Int }{
			new(big.Int).SetBytes(sig.SignatureR.Buffer), new(big.Int).SetBytes(sig.SignatureS.Buffer),
		})
		return err
	})
	return der, err
}
