package tpm

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/bulwark-project/bulwark/tpm/verify"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Errors callers may branch on.
var (
	// ErrNoAK means the AK has not been created yet (see (*TPM).AK).
	ErrNoAK = errors.New("tpm: no attestation key at its persistent handle")
	// ErrNoEKCert means the TPM holds no RSA EK certificate in NV.
	ErrNoEKCert = errors.New("tpm: no EK certificate in NV")
	// ErrHandleInUse means a persistent handle Bulwark uses holds a key of
	// another shape, which Bulwark refuses to use or overwrite.
	ErrHandleInUse = errors.New("tpm: persistent handle holds a foreign key")
)

// akTemplate is Bulwark's attestation key: a restricted ECC P-256 ECDSA
// (SHA-256) signing key, generated in the TPM and bound to it, created as a
// primary key of the owner hierarchy.
var akTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, NoDA: true, Restricted: true, SignEncrypt: true,
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
		X: tpm2.TPM2BECCParameter{Buffer: []byte("bulwark-ak")},
	}),
}

// signerTemplate is Bulwark's general-purpose signing key: a non-restricted
// ECC P-256 signing key (scheme chosen per signature) generated in the TPM.
var signerTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, NoDA: true, SignEncrypt: true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
		CurveID:   tpm2.TPMECCNistP256,
		KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: []byte("bulwark-signer")},
	}),
}

// sameShape reports whether two public areas are equal except for their
// unique field (the key itself).
func sameShape(a, b tpm2.TPMTPublic) bool {
	return bytes.Equal(marshalShape(a), marshalShape(b))
}

func marshalShape(p tpm2.TPMTPublic) []byte {
	switch p.Type {
	case tpm2.TPMAlgECC:
		p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	case tpm2.TPMAlgRSA:
		p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
	}
	return tpm2.Marshal(p)
}

// key is a loaded key: its handle, Name and public area.
type key struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	pub    tpm2.TPMTPublic
	raw    []byte // TPMT_PUBLIC as the TPM returned it
	flush  func() // flushes a transient key; no-op for persistent ones
}

func (k *key) auth() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: k.handle, Name: k.name, Auth: tpm2.PasswordAuth(nil)}
}

// readPersistent reads the key at a persistent handle. ok is false if the
// handle is empty.
func readPersistent(tp transport.TPM, h uint32) (*key, bool, error) {
	rsp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(h)}.Execute(tp)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("reading persistent handle 0x%08x: %w", h, err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, false, fmt.Errorf("persistent handle 0x%08x: %w", h, err)
	}
	return &key{handle: tpm2.TPMHandle(h), name: rsp.Name, pub: *pub, raw: rsp.OutPublic.Bytes(), flush: func() {}}, true, nil
}

func createPrimary(tp transport.TPM, hierarchy tpm2.TPMHandle, tmpl tpm2.TPMTPublic) (*key, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: hierarchy, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(tp)
	if err != nil {
		return nil, fmt.Errorf("creating primary key: %w", err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		flush(tp, rsp.ObjectHandle)
		return nil, err
	}
	h := rsp.ObjectHandle
	return &key{handle: h, name: rsp.Name, pub: *pub, raw: rsp.OutPublic.Bytes(), flush: func() { flush(tp, h) }}, nil
}

func flush(tp transport.TPM, h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(tp)
}

// persistentKey returns the key of shape tmpl at handle h, creating it as
// a primary of hierarchy and persisting it there if the handle is empty
// (and create is set). A key of another shape at h is an error.
func persistentKey(tp transport.TPM, h uint32, hierarchy tpm2.TPMHandle, tmpl tpm2.TPMTPublic, create bool) (*key, error) {
	k, ok, err := readPersistent(tp, h)
	if err != nil {
		return nil, err
	}
	if ok {
		if !sameShape(k.pub, tmpl) {
			return nil, fmt.Errorf("%w: 0x%08x holds a key that is not Bulwark's; evict it (tpm2_evictcontrol -C o -c 0x%08x) if it is unused", ErrHandleInUse, h, h)
		}
		return k, nil
	}
	if !create {
		return nil, nil
	}
	tk, err := createPrimary(tp, hierarchy, tmpl)
	if err != nil {
		return nil, err
	}
	defer tk.flush()
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     &tpm2.NamedHandle{Handle: tk.handle, Name: tk.name},
		PersistentHandle: tpm2.TPMHandle(h),
	}.Execute(tp)
	if err != nil && !errors.Is(err, tpm2.TPMRCNVDefined) {
		return nil, fmt.Errorf("persisting key at 0x%08x: %w", h, err)
	}
	// Read it back (another process may have won a race to persist it).
	k, ok, err = readPersistent(tp, h)
	if err != nil {
		return nil, err
	}
	if !ok || !sameShape(k.pub, tmpl) {
		return nil, fmt.Errorf("%w: 0x%08x after persisting", ErrHandleInUse, h)
	}
	return k, nil
}

// loadEK returns the RSA-2048 EK (TCG template L-1): the persistent one at
// EKHandle if it has exactly that shape, else a transient one created from
// the endorsement seed (the same key), which is persisted at EKHandle when
// the handle is free so later uses are fast.
func (t *TPM) loadEK(tp transport.TPM) (*key, error) {
	k, ok, err := readPersistent(tp, EKHandle)
	if err != nil {
		return nil, err
	}
	if ok && sameShape(k.pub, tpm2.RSAEKTemplate) {
		return k, nil
	}
	tk, err := createPrimary(tp, tpm2.TPMRHEndorsement, tpm2.RSAEKTemplate)
	if err != nil {
		return nil, fmt.Errorf("EK: %w", err)
	}
	if !ok {
		_, err := tpm2.EvictControl{
			Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			ObjectHandle:     &tpm2.NamedHandle{Handle: tk.handle, Name: tk.name},
			PersistentHandle: tpm2.TPMHandle(EKHandle),
		}.Execute(tp)
		if err == nil {
			tk.flush()
			if pk, ok, err := readPersistent(tp, EKHandle); err == nil && ok {
				return pk, nil
			}
			return createPrimary(tp, tpm2.TPMRHEndorsement, tpm2.RSAEKTemplate)
		}
		t.log.Debug("could not persist the EK", "handle", fmt.Sprintf("0x%08x", EKHandle), "err", err)
	}
	return tk, nil
}

// EKPublic returns the endorsement key's public area (TPMT_PUBLIC): the TCG
// RSA-2048 EK (template L-1), the key an RSA EK certificate certifies.
func (t *TPM) EKPublic(ctx context.Context) ([]byte, error) {
	var out []byte
	err := t.do(ctx, func(tp transport.TPM) error {
		k, err := t.loadEK(tp)
		if err != nil {
			return err
		}
		defer k.flush()
		out = bytes.Clone(k.raw)
		return nil
	})
	return out, err
}

// EKCertificate returns the RSA EK certificate (DER) from NV index
// EKCertIndex, or ErrNoEKCert. swtpm created by swtpm_setup
// --create-ek-cert has one; the reference simulator has none.
func (t *TPM) EKCertificate(ctx context.Context) ([]byte, error) {
	var out []byte
	err := t.do(ctx, func(tp transport.TPM) error {
		b, err := readNV(tp, EKCertIndex)
		if err != nil {
			return err
		}
		out = verify.TrimDER(b)
		return nil
	})
	return out, err
}

func readNV(tp transport.TPM, index uint32) ([]byte, error) {
	rp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(index)}.Execute(tp)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, ErrNoEKCert
		}
		return nil, fmt.Errorf("NV 0x%08x: %w", index, err)
	}
	pub, err := rp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("NV 0x%08x: %w", index, err)
	}
	auth := tpm2.AuthHandle{Handle: tpm2.TPMHandle(index), Name: rp.NVName, Auth: tpm2.PasswordAuth(nil)}
	switch {
	case pub.Attributes.AuthRead:
	case pub.Attributes.OwnerRead:
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	case pub.Attributes.PPRead:
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHPlatform, Auth: tpm2.PasswordAuth(nil)}
	}
	size := int(pub.DataSize)
	if size > verify.MaxCertSize {
		return nil, fmt.Errorf("NV 0x%08x: %d bytes is too large", index, size)
	}
	out := make([]byte, 0, size)
	const chunk = 512
	for len(out) < size {
		n := min(chunk, size-len(out))
		rsp, err := tpm2.NVRead{
			AuthHandle: auth,
			NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(index), Name: rp.NVName},
			Size:       uint16(n),
			Offset:     uint16(len(out)),
		}.Execute(tp)
		if err != nil {
			return nil, fmt.Errorf("reading NV 0x%08x: %w", index, err)
		}
		if len(rsp.Data.Buffer) == 0 {
			return nil, fmt.Errorf("reading NV 0x%08x: empty read", index)
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out, nil
}

// AK is the public part of Bulwark's attestation key.
type AK struct {
	// Public is the TPMT_PUBLIC, as sent to attestd (verify.ParseAKPublic).
	Public []byte
	// Name is the TPM Name (nameAlg || SHA-256(Public)).
	Name []byte
	// Handle is the persistent handle (AKHandle).
	Handle uint32
}

// AK returns the attestation key, creating it and persisting it at
// AKHandle on first use.
func (t *TPM) AK(ctx context.Context) (*AK, error) { return t.ak(ctx, true) }

// LoadAK returns the attestation key if it exists, else ErrNoAK; it never
// changes the TPM.
func (t *TPM) LoadAK(ctx context.Context) (*AK, error) { return t.ak(ctx, false) }

func (t *TPM) ak(ctx context.Context, create bool) (*AK, error) {
	var out *AK
	err := t.do(ctx, func(tp transport.TPM) error {
		k, err := persistentKey(tp, AKHandle, tpm2.TPMRHOwner, akTemplate, create)
		if err != nil {
			return fmt.Errorf("AK: %w", err)
		}
		if k == nil {
			return ErrNoAK
		}
		out = &AK{Public: bytes.Clone(k.raw), Name: bytes.Clone(k.name.Buffer), Handle: AKHandle}
		return nil
	})
	return out, err
}
