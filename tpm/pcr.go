package tpm

import (
	"context"
	"fmt"
	"slices"

	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

func checkPCRs(pcrs []int) error {
	if len(pcrs) == 0 {
		return fmt.Errorf("no PCRs selected")
	}
	for _, p := range pcrs {
		if p < 0 || p > limits.MaxPCR {
			return fmt.Errorf("PCR %d out of range 0..%d", p, limits.MaxPCR)
		}
	}
	return nil
}

func selection(pcrs []int) tpm2.TPMLPCRSelection {
	u := make([]uint, len(pcrs))
	for i, p := range pcrs {
		u[i] = uint(p)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(u...),
	}}}
}

// ReadPCRs reads PCRs of the SHA-256 bank.
func (t *TPM) ReadPCRs(ctx context.Context, pcrs ...int) (map[int][]byte, error) {
	if err := checkPCRs(pcrs); err != nil {
		return nil, err
	}
	var out map[int][]byte
	err := t.do(ctx, func(tp transport.TPM) error {
		var err error
		out, err = readPCRs(tp, pcrs)
		return err
	})
	return out, err
}

func readPCRs(tp transport.TPM, pcrs []int) (map[int][]byte, error) {
	out := make(map[int][]byte, len(pcrs))
	todo := slices.Clone(pcrs)
	slices.Sort(todo)
	todo = slices.Compact(todo)
	// A TPM returns at most 8 digests per call: ask again for the rest.
	for len(todo) > 0 {
		rsp, err := tpm2.PCRRead{PCRSelectionIn: selection(todo)}.Execute(tp)
		if err != nil {
			return nil, fmt.Errorf("reading PCRs: %w", err)
		}
		var got []int
		for _, s := range rsp.PCRSelectionOut.PCRSelections {
			if s.Hash != tpm2.TPMAlgSHA256 {
				continue
			}
			for i, b := range s.PCRSelect {
				for bit := 0; bit < 8; bit++ {
					if b&(1<<bit) != 0 {
						got = append(got, 8*i+bit)
					}
				}
			}
		}
		if len(got) == 0 || len(got) != len(rsp.PCRValues.Digests) {
			return nil, fmt.Errorf("reading PCRs %v: the TPM returned no SHA-256 values (is the SHA-256 bank active?)", todo)
		}
		for i, p := range got {
			out[p] = rsp.PCRValues.Digests[i].Buffer
		}
		todo = slices.DeleteFunc(todo, func(p int) bool { _, ok := out[p]; return ok })
	}
	return out, nil
}

// Extend extends a SHA-256 digest into a PCR's SHA-256 bank:
// new = SHA-256(old || digest). Other banks of the PCR are not extended;
// Bulwark's verifier reads only the SHA-256 bank.
func (t *TPM) Extend(ctx context.Context, pcr int, digest []byte) error {
	if err := checkPCRs([]int{pcr}); err != nil {
		return err
	}
	if len(digest) != 32 {
		return fmt.Errorf("extending PCR %d: digest of %d bytes, want 32 (SHA-256)", pcr, len(digest))
	}
	return t.do(ctx, func(tp transport.TPM) error {
		_, err := tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
			Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{
				HashAlg: tpm2.TPMAlgSHA256, Digest: digest,
			}}},
		}.Execute(tp)
		if err != nil {
			return fmt.Errorf("extending PCR %d: %w", pcr, err)
		}
		return nil
	})
}
