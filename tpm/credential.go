package tpm

import (
	"bytes"
	"context"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ActivateCredential recovers the secret that a verifier encrypted with
// verify.MakeCredential to this TPM's EK and bound to the AK's Name
// (TPM2_ActivateCredential). It fails unless the credential was made for
// this EK and this AK. The EK is authorized with its TCG policy
// (PolicySecret of the endorsement hierarchy).
func (t *TPM) ActivateCredential(ctx context.Context, credentialBlob, encryptedSecret []byte) ([]byte, error) {
	if len(credentialBlob) == 0 || len(credentialBlob) > 1024 || len(encryptedSecret) == 0 || len(encryptedSecret) > 1024 {
		return nil, fmt.Errorf("activate credential: blob of %d and secret of %d bytes out of range", len(credentialBlob), len(encryptedSecret))
	}
	var out []byte
	err := t.do(ctx, func(tp transport.TPM) error {
		ak, err := persistentKey(tp, AKHandle, tpm2.TPMRHOwner, akTemplate, false)
		if err != nil {
			return fmt.Errorf("AK: %w", err)
		}
		if ak == nil {
			return ErrNoAK
		}
		ek, err := t.loadEK(tp)
		if err != nil {
			return err
		}
		defer ek.flush()
		ekPolicy := tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tp transport.TPM, h tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
			_, err := tpm2.PolicySecret{
				AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
				PolicySession: h,
				NonceTPM:      nonceTPM,
			}.Execute(tp)
			return err
		})
		rsp, err := tpm2.ActivateCredential{
			ActivateHandle: ak.auth(),
			KeyHandle:      tpm2.AuthHandle{Handle: ek.handle, Name: ek.name, Auth: ekPolicy},
			CredentialBlob: tpm2.TPM2BIDObject{Buffer: credentialBlob},
			Secret:         tpm2.TPM2BEncryptedSecret{Buffer: encryptedSecret},
		}.Execute(tp)
		if err != nil {
			return fmt.Errorf("activate credential: %w", err)
		}
		out = bytes.Clone(rsp.CertInfo.Buffer)
		return nil
	})
	return out, err
}
