package store

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
)

// SignCheckpoint signs c.SigningBytes() with s (attestd's key): ECDSA
// (ASN.1 signature) and RSA (PKCS #1 v1.5) over its SHA-256, Ed25519 over
// the bytes. Publish or keep the signature outside the store; later,
// VerifyCheckpoint and VerifyAudit with the checkpoint as Trusted prove the
// log was not rewritten up to it.
func SignCheckpoint(rand io.Reader, s crypto.Signer, c Checkpoint) ([]byte, error) {
	if len(c.Hash) != sha256.Size || c.Seq == 0 {
		return nil, fmt.Errorf("checkpoint needs a seq and a 32-byte hash: %w", ErrInvalid)
	}
	return sign(rand, s, c.SigningBytes())
}

// SignSeal signs c as a seal (c.SealSigningBytes, with the algorithms of
// SignCheckpoint): the checkpoint through which the audit log may be
// purged. Give it to Retention.PurgeSealed.
func SignSeal(rand io.Reader, s crypto.Signer, c Checkpoint) (Seal, error) {
	if len(c.Hash) != sha256.Size || c.Seq == 0 {
		return Seal{}, fmt.Errorf("seal needs a seq and a 32-byte hash: %w", ErrInvalid)
	}
	sig, err := sign(rand, s, c.SealSigningBytes())
	if err != nil {
		return Seal{}, fmt.Errorf("signing the audit seal at %d: %w", c.Seq, err)
	}
	return Seal{Checkpoint: Checkpoint{Seq: c.Seq, Hash: bytes.Clone(c.Hash)}, Sig: sig}, nil
}

// VerifySeal checks a signature made by SignSeal. A checkpoint's
// signature (SignCheckpoint) does not verify as a seal's.
func VerifySeal(pub crypto.PublicKey, s Seal) error {
	if err := verifySig(pub, s.SealSigningBytes(), s.Sig); err != nil {
		return fmt.Errorf("audit seal at record %d: %w", s.Seq, err)
	}
	return nil
}

func sign(rand io.Reader, s crypto.Signer, msg []byte) ([]byte, error) {
	if _, ok := s.Public().(ed25519.PublicKey); ok {
		return s.Sign(rand, msg, crypto.Hash(0))
	}
	d := sha256.Sum256(msg)
	return s.Sign(rand, d[:], crypto.SHA256)
}

// VerifyCheckpoint checks a signature made by SignCheckpoint.
func VerifyCheckpoint(pub crypto.PublicKey, c Checkpoint, sig []byte) error {
	return verifySig(pub, c.SigningBytes(), sig)
}

func verifySig(pub crypto.PublicKey, msg, sig []byte) error {
	d := sha256.Sum256(msg)
	ok := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, d[:], sig)
	case ed25519.PublicKey:
		ok = ed25519.Verify(k, msg, sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(k, crypto.SHA256, d[:], sig) == nil
	default:
		return fmt.Errorf("checkpoint key type %T is not supported: %w", pub, ErrInvalid)
	}
	if !ok {
		return errors.New("store: checkpoint signature does not verify")
	}
	return nil
}
