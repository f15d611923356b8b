package tpm

import (
	"bytes"
	"context"
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/bulwark-project/bulwark/tpm/verify"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ErrPCRMismatch means Unseal failed because the PCRs no longer have the
// values the secret was sealed to.
var ErrPCRMismatch = errors.New("tpm: PCR values differ from those the secret was sealed to")

// MaxSealSize is the largest secret Seal accepts (TPM MAX_SYM_DATA).
const MaxSealSize = 128

var sealMagic = []byte("BWSEAL\x00\x01")

// Seal seals a small secret (1..MaxSealSize bytes, e.g. a vault master key)
// to the current SHA-256 values of pcrs: Unseal on this TPM succeeds only
// while those PCRs hold the same values. The blob is safe to store on disk;
// only this TPM can open it.
func (t *TPM) Seal(ctx context.Context, secret []byte, pcrs []int) ([]byte, error) {
	if err := checkPCRs(pcrs); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	vals, err := t.ReadPCRs(ctx, pcrs...)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return t.SealTo(ctx, secret, vals)
}

// SealTo seals a secret to given SHA-256 PCR values (e.g. predicted ones).
func (t *TPM) SealTo(ctx context.Context, secret []byte, values map[int][]byte) ([]byte, error) {
	if len(secret) == 0 || len(secret) > MaxSealSize {
		return nil, fmt.Errorf("seal: secret of %d bytes, want 1..%d", len(secret), MaxSealSize)
	}
	pcrs := slices.Sorted(maps.Keys(values))
	if err := checkPCRs(pcrs); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	for p, v := range values {
		if len(v) != 32 {
			return nil, fmt.Errorf("seal: PCR %d value of %d bytes, want 32", p, len(v))
		}
	}
	pcrDigest := verify.PCRDigest(crypto.SHA256, values)
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	if err := (tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: pcrDigest}, Pcrs: selection(pcrs)}).Update(calc); err != nil {
		return nil, fmt.Errorf("seal: policy: %w", err)
	}
	tmpl := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgKeyedHash,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, NoDA: true, AdminWithPolicy: true,
		},
		AuthPolicy: tpm2.TPM2BDigest{Buffer: calc.Hash().Digest},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
		}),
	}
	var blob []byte
	err = t.do(ctx, func(tp transport.TPM) error {
		srk, err := createPrimary(tp, tpm2.TPMRHOwner, tpm2.ECCSRKTemplate)
		if err != nil {
			return fmt.Errorf("seal: storage key: %w", err)
		}
		defer srk.flush()
		rsp, err := tpm2.Create{
			ParentHandle: srk.auth(),
			InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
				Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: secret}),
			}},
			InPublic: tpm2.New2B(tmpl),
		}.Execute(tp)
		if err != nil {
			return fmt.Errorf("seal: %w", err)
		}
		blob = encodeSealed(pcrs, rsp.OutPublic.Bytes(), rsp.OutPrivate.Buffer)
		return nil
	})
	return blob, err
}

func encodeSealed(pcrs []int, pub, priv []byte) []byte {
	b := slices.Clone(sealMagic)
	b = append(b, byte(len(pcrs)))
	for _, p := range pcrs {
		b = append(b, byte(p))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(pub)))
	b = append(b, pub...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(priv)))
	return append(b, priv...)
}

func decodeSealed(b []byte) (pcrs []int, pub, priv []byte, err error) {
	bad := func(what string) error { return fmt.Errorf("sealed blob: %s", what) }
	if len(b) > 4096 {
		return nil, nil, nil, bad("too large")
	}
	if !bytes.HasPrefix(b, sealMagic) {
		return nil, nil, nil, bad("not a Bulwark sealed blob (bad magic or version)")
	}
	b = b[len(sealMagic):]
	if len(b) < 1 || int(b[0]) == 0 || len(b) < 1+int(b[0]) {
		return nil, nil, nil, bad("bad PCR list")
	}
	for _, p := range b[1 : 1+int(b[0])] {
		pcrs = append(pcrs, int(p))
	}
	if checkPCRs(pcrs) != nil {
		return nil, nil, nil, bad("PCR out of range")
	}
	b = b[1+int(b[0]):]
	field := func() []byte {
		if len(b) < 2 {
			return nil
		}
		n := int(binary.BigEndian.Uint16(b))
		if n == 0 || n > 1024 || len(b) < 2+n {
			return nil
		}
		v := b[2 : 2+n]
		b = b[2+n:]
		return v
	}
	if pub = field(); pub == nil {
		return nil, nil, nil, bad("bad public area")
	}
	if priv = field(); priv == nil {
		return nil, nil, nil, bad("bad private area")
	}
	if len(b) != 0 {
		return nil, nil, nil, bad("trailing bytes")
	}
	return pcrs, pub, priv, nil
}

// Unseal opens a blob made by Seal or SealTo on this TPM. It fails with
// ErrPCRMismatch if the PCRs no longer hold the sealed-to values.
func (t *TPM) Unseal(ctx context.Context, blob []byte) ([]byte, error) {
	pcrs, pub, priv, err := decodeSealed(blob)
	if err != nil {
		return nil, fmt.Errorf("unseal: %w", err)
	}
	var out []byte
	err = t.do(ctx, func(tp transport.TPM) error {
		srk, err := createPrimary(tp, tpm2.TPMRHOwner, tpm2.ECCSRKTemplate)
		if err != nil {
			return fmt.Errorf("unseal: storage key: %w", err)
		}
		defer srk.flush()
		lr, err := tpm2.Load{
			ParentHandle: srk.auth(),
			InPrivate:    tpm2.TPM2BPrivate{Buffer: priv},
			InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](pub),
		}.Execute(tp)
		if err != nil {
			return fmt.Errorf("unseal: loading sealed object (sealed by another TPM, or the TPM was cleared?): %w", err)
		}
		defer flush(tp, lr.ObjectHandle)
		pcrPolicy := tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tp transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
			_, err := tpm2.PolicyPCR{PolicySession: h, Pcrs: selection(pcrs)}.Execute(tp)
			return err
		})
		rsp, err := tpm2.Unseal{
			ItemHandle: tpm2.AuthHandle{Handle: lr.ObjectHandle, Name: lr.Name, Auth: pcrPolicy},
		}.Execute(tp)
		if err != nil {
			if errors.Is(err, tpm2.TPMRCPolicyFail) {
				return ErrPCRMismatch
			}
			return fmt.Errorf("unseal: %w", err)
		}
		out = bytes.Clone(rsp.OutData.Buffer)
		return nil
	})
	return out, err
}
