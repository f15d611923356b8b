package softtpm

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// Labels of TPM 2.0 Part 1 §24 (credential protection). The KDFs append the
// terminating NUL themselves.
const (
	labelIdentity  = "IDENTITY"
	labelStorage   = "STORAGE"
	labelIntegrity = "INTEGRITY"
)

const (
	// maxCredentialBlob bounds a TPM2B_ID_OBJECT (a real TPM's is well
	// under 200 bytes).
	maxCredentialBlob = 1024
	// maxCredentialSize is sizeof(TPMU_HA): the largest credential a TPM
	// accepts in TPM2_MakeCredential.
	maxCredentialSize = 64
	// ekSymKeyBits is the EK template's symmetric key size (AES-128-CFB).
	ekSymKeyBits = 128
)

// ErrCredential is returned when a credential does not activate: it was not
// made for this EK and AK, or it was tampered with. It never says which.
var ErrCredential = errors.New("softtpm: credential does not activate with this EK and AK")

// ActivateCredential recovers the credential that the verifier protected
// with MakeCredential to this TPM's EK and AK name, as TPM2_ActivateCredential
// does (TPM 2.0 Part 1 §24):
//
//   - the seed is recovered from encryptedSecret: for an RSA EK by
//     RSA-OAEP-SHA256 decryption with the label "IDENTITY\x00"; for an ECC EK
//     by ECDH of the EK with the ephemeral point in encryptedSecret
//     (a TPMS_ECC_POINT) and KDFe(SHA-256, Z, "IDENTITY", ephemeral X, EK X);
//   - the integrity key KDFa(SHA-256, seed, "INTEGRITY") must give the HMAC
//     over encIdentity || AK name that credentialBlob carries (compared in
//     constant time);
//   - encIdentity is AES-128-CFB decrypted (zero IV) under
//     KDFa(SHA-256, seed, "STORAGE", AK name) into a TPM2B_DIGEST.
//
// credentialBlob is a TPMS_ID_OBJECT (TPM2B integrityHMAC followed by
// encIdentity) and encryptedSecret the secret's bytes: the buffers of the
// command's TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET, as go-tpm's
// tpm2.CreateCredential returns them. The same buffers still wrapped in
// their TPM2B size field (legacy credactivation.Generate) are accepted too.
func (t *TPM) ActivateCredential(credentialBlob, encryptedSecret []byte) ([]byte, error) {
	if len(credentialBlob) > maxCredentialBlob {
		return nil, fmt.Errorf("softtpm: credential blob is %d bytes, the limit is %d", len(credentialBlob), maxCredentialBlob)
	}
	if len(encryptedSecret) > maxCredentialBlob {
		return nil, fmt.Errorf("softtpm: encrypted secret is %d bytes, the limit is %d", len(encryptedSecret), maxCredentialBlob)
	}
	mac, encIdentity, err := parseIDObject(credentialBlob)
	if err != nil {
		return nil, err
	}
	seed, err := t.recoverSeed(encryptedSecret)
	if err != nil {
		return nil, err
	}

	h := hmac.New(sha256.New, kdfa(seed, labelIntegrity, nil, nil, sha256.Size*8))
	h.Write(encIdentity)
	h.Write(t.akName)
	if !hmac.Equal(h.Sum(nil), mac) {
		return nil, ErrCredential
	}

	block, err := aes.NewCipher(kdfa(seed, labelStorage, t.akName, nil, ekSymKeyBits))
	if err != nil {
		return nil, fmt.Errorf("softtpm: credential cipher: %w", err)
	}
	plain := make([]byte, len(encIdentity))
	//lint:ignore SA1019 CFB is what TPM 2.0 credential protection specifies.
	cipher.NewCFBDecrypter(block, make([]byte, aes.BlockSize)).XORKeyStream(plain, encIdentity)
	if len(plain) < 2 {
		return nil, ErrCredential
	}
	n := int(binary.BigEndian.Uint16(plain))
	if n != len(plain)-2 || n == 0 || n > maxCredentialSize {
		// The HMAC passed, so this is a malformed credential from a
		// verifier that holds the seed, not tampering.
		return nil, fmt.Errorf("softtpm: credential: TPM2B_DIGEST size %d does not fit its %d bytes (limit %d)", n, len(plain)-2, maxCredentialSize)
	}
	return plain[2:], nil
}

// parseIDObject splits a TPMS_ID_OBJECT, with or without its TPM2B size.
func parseIDObject(b []byte) (mac, encIdentity []byte, err error) {
	if len(b) >= 2 && int(binary.BigEndian.Uint16(b)) == len(b)-2 {
		// A TPM2B_ID_OBJECT: the bare form cannot have this shape, since
		// its encIdentity would be empty.
		b = b[2:]
	}
	if len(b) < 2 {
		return nil, nil, errors.New("softtpm: credential blob: too short for TPMS_ID_OBJECT.integrityHMAC")
	}
	n := int(binary.BigEndian.Uint16(b))
	if n != sha256.Size {
		return nil, nil, fmt.Errorf("softtpm: credential blob: integrityHMAC is %d bytes, want %d (SHA-256)", n, sha256.Size)
	}
	if len(b) < 2+n+3 { // encIdentity holds at least a TPM2B_DIGEST of one byte
		return nil, nil, errors.New("softtpm: credential blob: encIdentity missing or too short")
	}
	return b[2 : 2+n], b[2+n:], nil
}

func (t *TPM) recoverSeed(secret []byte) ([]byte, error) {
	switch t.ekType {
	case EKRSA:
		size := t.ekRSA.Size()
		if len(secret) == size+2 && int(binary.BigEndian.Uint16(secret)) == size {
			secret = secret[2:]
		}
		if len(secret) != size {
			return nil, fmt.Errorf("softtpm: encrypted secret is %d bytes, want %d for an RSA-2048 EK", len(secret), size)
		}
		seed, err := rsa.DecryptOAEP(sha256.New(), nil, t.ekRSA, secret, []byte(labelIdentity+"\x00"))
		if err != nil {
			return nil, ErrCredential
		}
		if len(seed) == 0 || len(seed) > maxCredentialSize {
			return nil, ErrCredential
		}
		return seed, nil
	case EKECC:
		if len(secret) >= 2 && int(binary.BigEndian.Uint16(secret)) == len(secret)-2 {
			secret = secret[2:] // TPM2B_ENCRYPTED_SECRET; a bare point cannot have this shape
		}
		x, rest, err := take2B(secret, "encrypted secret: ephemeral point X")
		if err != nil {
			return nil, err
		}
		y, rest, err := take2B(rest, "encrypted secret: ephemeral point Y")
		if err != nil {
			return nil, err
		}
		if len(rest) != 0 {
			return nil, fmt.Errorf("softtpm: encrypted secret: %d bytes after the TPMS_ECC_POINT", len(rest))
		}
		if len(x) > 32 || len(y) > 32 {
			return nil, errors.New("softtpm: encrypted secret: ephemeral point coordinates larger than P-256")
		}
		pt := make([]byte, 65)
		pt[0] = 4
		copy(pt[1+32-len(x):33], x)
		copy(pt[33+32-len(y):], y)
		eph, err := ecdh.P256().NewPublicKey(pt)
		if err != nil {
			return nil, fmt.Errorf("softtpm: encrypted secret: ephemeral point is not on P-256: %w", err)
		}
		z, err := t.ekECDH.ECDH(eph)
		if err != nil {
			return nil, ErrCredential
		}
		ekX, _ := splitPoint(t.ekECDH.PublicKey().Bytes())
		return kdfe(z, labelIdentity, pt[1:33], ekX, sha256.Size*8), nil
	}
	return nil, fmt.Errorf("softtpm: unknown EK type %d", int(t.ekType))
}

func take2B(b []byte, what string) (val, rest []byte, err error) {
	if len(b) < 2 {
		return nil, nil, fmt.Errorf("softtpm: %s: truncated size", what)
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return nil, nil, fmt.Errorf("softtpm: %s: size %d but %d bytes left", what, n, len(b)-2)
	}
	return b[2 : 2+n], b[2+n:], nil
}

// kdfa is TPM 2.0 KDFa with SHA-256 (Part 1 §11.4.10.2, SP 800-108 counter
// mode with HMAC): HMAC(key, [i]32 || label || 0 || contextU || contextV ||
// [bits]32) for i = 1, 2, ..., truncated to bits.
func kdfa(key []byte, label string, contextU, contextV []byte, bits int) []byte {
	mac := hmac.New(sha256.New, key)
	return kdf(mac, bits, func(h hash.Hash) {
		h.Write([]byte(label))
		h.Write([]byte{0})
		h.Write(contextU)
		h.Write(contextV)
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(bits)))
	})
}

// kdfe is TPM 2.0 KDFe with SHA-256 (Part 1 §11.4.10.3, SP 800-56A
// concatenation KDF): H([i]32 || Z || label || 0 || partyU || partyV).
func kdfe(z []byte, label string, partyU, partyV []byte, bits int) []byte {
	return kdf(sha256.New(), bits, func(h hash.Hash) {
		h.Write(z)
		h.Write([]byte(label))
		h.Write([]byte{0})
		h.Write(partyU)
		h.Write(partyV)
	})
}

func kdf(h hash.Hash, bits int, body func(hash.Hash)) []byte {
	n := (bits + 7) / 8
	var out []byte
	for i := uint32(1); len(out) < n; i++ {
		h.Reset()
		h.Write(binary.BigEndian.AppendUint32(nil, i))
		body(h)
		out = h.Sum(out)
	}
	out = out[:n]
	if r := bits % 8; r != 0 {
		out[0] &= byte(1<<r) - 1
	}
	return out
}
