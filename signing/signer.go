package signing

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/sigstore/sigstore/pkg/signature"
)

// Signer signs SHA-256 digests with a private key held in memory or in a
// device such as a TPM. It implements sigstore's signature.SignerVerifier, so
// it also works with sigstore libraries that take one, and crypto.Signer.
//
// Signer is safe for concurrent use if the underlying crypto.Signer is. Call
// Close when done: for a TPM-held key it releases the TPM.
type Signer struct {
	s      crypto.Signer
	pub    crypto.PublicKey
	keyID  string
	closer io.Closer

	// Rand is the randomness for ECDSA nonces (crypto/rand when nil). Only
	// in-memory keys use it; a TPM draws its own.
	Rand io.Reader

	mu     sync.Mutex
	closed bool
}

var (
	_ signature.SignerVerifier = (*Signer)(nil)
	_ crypto.Signer            = (*Signer)(nil)
)

// NewSigner wraps s, whose public key must be a supported key (ECDSA P-256 or
// RSA ≥ 2048). closer, if not nil, is closed by Close (e.g. the TPM behind s).
func NewSigner(s crypto.Signer, closer io.Closer) (*Signer, error) {
	if s == nil {
		return nil, errors.New("signing: nil signer")
	}
	pub := s.Public()
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	return &Signer{s: s, pub: pub, keyID: KeyID(pub), closer: closer}, nil
}

// LoadSigner opens the cosign private key file keyRef (see
// ParsePrivateKey); pass supplies its password when it is encrypted. A key
// held in a device (a TPM) is not loaded here: the caller opens the device
// and wraps its crypto.Signer with NewSigner, so this package links no
// device client. Close the Signer when done.
func LoadSigner(keyRef string, pass func() ([]byte, error)) (*Signer, error) {
	if strings.HasPrefix(keyRef, "tpm:") {
		return nil, fmt.Errorf("signing: %q names a TPM key: open the TPM and wrap its crypto.Signer with NewSigner", keyRef)
	}
	if keyRef == "" {
		return nil, errors.New("signing: no key given (a cosign.key file or tpm:SPEC)")
	}
	b, err := ReadLimited(keyRef, MaxKeyFileSize)
	if err != nil {
		return nil, fmt.Errorf("signing: reading private key: %w", err)
	}
	s, err := ParsePrivateKey(b, pass)
	clear(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyRef, err)
	}
	return NewSigner(s, nil)
}

// Public returns the public key (crypto.Signer).
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// KeyID returns the key's fingerprint (see KeyID).
func (s *Signer) KeyID() string { return s.keyID }

// PublicKey returns the public key (sigstore's PublicKeyProvider).
func (s *Signer) PublicKey(...signature.PublicKeyOption) (crypto.PublicKey, error) {
	return s.pub, nil
}

// Sign implements crypto.Signer: it signs a SHA-256 digest and checks the
// result against the public key before returning it, so a faulty device
// cannot hand out a signature that will not verify. The result is ASN.1 DER
// for ECDSA and PKCS#1 v1.5 for RSA.
func (s *Signer) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts != nil && opts.HashFunc() != crypto.SHA256 {
		return nil, fmt.Errorf("signing: only SHA-256 digests are signed, got %v", opts.HashFunc())
	}
	return s.SignDigest(digest)
}

// SignDigest signs a SHA-256 digest (32 bytes) and returns the raw signature
// (DER for ECDSA), verified against the public key.
func (s *Signer) SignDigest(digest []byte) ([]byte, error) {
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("signing: digest is %d bytes, want %d (SHA-256)", len(digest), sha256.Size)
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	r := s.Rand
	if r == nil {
		r = rand.Reader
	}
	sig, err := s.s.Sign(r, digest, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing: signing with key %s: %w", s.keyID, err)
	}
	if err := VerifyDigest(s.pub, digest, sig); err != nil {
		return nil, fmt.Errorf("signing: the key %s produced a signature that does not verify: %w", s.keyID, err)
	}
	return sig, nil
}

// SignMessage implements sigstore's signature.Signer: it signs the SHA-256
// digest of message, or the digest given with options.WithDigest.
func (s *Signer) SignMessage(message io.Reader, opts ...signature.SignOption) ([]byte, error) {
	var digest []byte
	var so crypto.SignerOpts = crypto.SHA256
	for _, o := range opts {
		o.ApplyDigest(&digest)
		o.ApplyCryptoSignerOpts(&so)
	}
	if so != nil && so.HashFunc() != crypto.SHA256 {
		return nil, fmt.Errorf("signing: only SHA-256 is supported, got %v", so.HashFunc())
	}
	if digest == nil {
		if message == nil {
			return nil, errors.New("signing: nothing to sign")
		}
		h := sha256.New()
		if _, err := io.Copy(h, message); err != nil {
			return nil, fmt.Errorf("signing: reading message: %w", err)
		}
		digest = h.Sum(nil)
	}
	return s.SignDigest(digest)
}

// VerifySignature implements sigstore's signature.Verifier over the raw
// (not base64) signature.
func (s *Signer) VerifySignature(sig, message io.Reader, opts ...signature.VerifyOption) error {
	return rawVerifier{s.pub}.VerifySignature(sig, message, opts...)
}

// Close releases what the key lives in (a TPM connection). Safe to call more
// than once.
func (s *Signer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.closer != nil {
		return s.closer.Close()
	}
	return nil
}

// rawVerifier is a sigstore signature.Verifier over one public key, used to
// hand our keys to sigstore-go.
type rawVerifier struct{ pub crypto.PublicKey }

var _ signature.Verifier = rawVerifier{}

func (v rawVerifier) PublicKey(...signature.PublicKeyOption) (crypto.PublicKey, error) {
	return v.pub, nil
}

func (v rawVerifier) VerifySignature(sig, message io.Reader, opts ...signature.VerifyOption) error {
	var digest []byte
	var so crypto.SignerOpts = crypto.SHA256
	for _, o := range opts {
		o.ApplyDigest(&digest)
		o.ApplyCryptoSignerOpts(&so)
	}
	if so != nil && so.HashFunc() != crypto.SHA256 {
		return fmt.Errorf("signing: only SHA-256 is supported, got %v", so.HashFunc())
	}
	if sig == nil {
		return fmt.Errorf("signing: %w: empty", ErrMalformedSignature)
	}
	sigBytes, err := io.ReadAll(io.LimitReader(sig, MaxSignatureSize+1))
	if err != nil {
		return fmt.Errorf("signing: reading signature: %w", err)
	}
	if digest == nil {
		if message == nil {
			return errors.New("signing: no message to verify")
		}
		h := sha256.New()
		if _, err := io.Copy(h, message); err != nil {
			return fmt.Errorf("signing: reading message: %w", err)
		}
		digest = h.Sum(nil)
	}
	return VerifyDigest(v.pub, digest, sigBytes)
}
