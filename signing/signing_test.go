package signing

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

// opaqueSigner hides the concrete key type, as a TPM-backed crypto.Signer
// does: only Public and Sign are visible.
type opaqueSigner struct {
	inner crypto.Signer
	calls int
	mu    sync.Mutex
}

func (o *opaqueSigner) Public() crypto.PublicKey { return o.inner.Public() }
func (o *opaqueSigner) Sign(r io.Reader, d []byte, opts crypto.SignerOpts) ([]byte, error) {
	o.mu.Lock()
	o.calls++
	o.mu.Unlock()
	return o.inner.Sign(r, d, opts)
}

// brokenSigner returns signatures that do not verify.
type brokenSigner struct{ crypto.Signer }

func (b brokenSigner) Sign(r io.Reader, d []byte, opts crypto.SignerOpts) ([]byte, error) {
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return other.Sign(r, d, opts)
}

type closeCounter struct{ n int }

func (c *closeCounter) Close() error { c.n++; return nil }

var (
	rsaOnce sync.Once
	rsaKeys [2]*rsa.PrivateKey
)

// testRSAKey returns one of two RSA-2048 keys generated once per run.
func testRSAKey(t testing.TB, i int) *rsa.PrivateKey {
	rsaOnce.Do(func() {
		for j := range rsaKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys[j] = k
		}
	})
	return rsaKeys[i]
}

func newECSigner(t testing.TB) *Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(k, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSignVerifyBlob(t *testing.T) {
	ec := newECSigner(t)
	rs, err := NewSigner(testRSAKey(t, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	opaque, err := NewSigner(&opaqueSigner{inner: newECSigner(t).s}, nil)
	if err != nil {
		t.Fatal(err)
	}
	otherEC := newECSigner(t).Public()
	otherRSA := testRSAKey(t, 1).Public()
	blob := []byte("a kernel, an initrd or a policy\n")
	for _, tc := range []struct {
		name  string
		s     *Signer
		other crypto.PublicKey // another key of the same kind
	}{{"ecdsa-p256", ec, otherEC}, {"rsa-2048", rs, otherRSA}, {"opaque-crypto-signer", opaque, otherEC}} {
		t.Run(tc.name, func(t *testing.T) {
			sig, err := SignBlob(tc.s, bytes.NewReader(blob))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.ContainsAny(sig, "\n ") {
				t.Fatalf("signature %q has whitespace", sig)
			}
			if err := VerifyBlob(tc.s.Public(), bytes.NewReader(blob), sig); err != nil {
				t.Fatalf("VerifyBlob: %v", err)
			}
			// A trailing newline (a hand-edited .sig) is tolerated.
			if err := VerifyBlob(tc.s.Public(), bytes.NewReader(blob), append(append([]byte{}, sig...), '\n')); err != nil {
				t.Fatalf("VerifyBlob with newline: %v", err)
			}
			raw, _ := base64.StdEncoding.DecodeString(string(sig))
			sum := sha256.Sum256(blob)
			if err := VerifyDigest(tc.s.Public(), sum[:], raw); err != nil {
				t.Fatalf("VerifyDigest: %v", err)
			}
			// Failure cases.
			tampered := append([]byte{}, blob...)
			tampered[0] ^= 1
			truncated := raw[:len(raw)-1]
			flipped := append([]byte{}, raw...)
			flipped[len(flipped)-1] ^= 0x01
			for _, fc := range []struct {
				name string
				pub  crypto.PublicKey
				blob []byte
				sig  []byte
				want error
			}{
				{"tampered blob", tc.s.Public(), tampered, sig, ErrBadSignature},
				{"wrong key", tc.other, blob, sig, ErrBadSignature},
				{"empty blob", tc.s.Public(), nil, sig, ErrBadSignature},
				{"flipped signature byte", tc.s.Public(), blob, EncodeSignature(flipped), nil},
				{"truncated signature", tc.s.Public(), blob, EncodeSignature(truncated), ErrMalformedSignature},
				{"garbage signature", tc.s.Public(), blob, EncodeSignature([]byte("not a signature at all")), ErrMalformedSignature},
				{"base64 garbage", tc.s.Public(), blob, []byte("!!not*base64!!"), ErrMalformedSignature},
				{"empty signature", tc.s.Public(), blob, []byte(" \n"), ErrMalformedSignature},
				{"raw DER instead of base64", tc.s.Public(), blob, raw, ErrMalformedSignature},
				{"huge signature", tc.s.Public(), blob, bytes.Repeat([]byte("QUFB"), 4096), ErrMalformedSignature},
			} {
				err := VerifyBlob(fc.pub, bytes.NewReader(fc.blob), fc.sig)
				if err == nil {
					t.Errorf("%s: verified", fc.name)
					continue
				}
				if fc.want != nil && !errors.Is(err, fc.want) {
					t.Errorf("%s: error %v, want %v", fc.name, err, fc.want)
				}
				if fc.want == nil && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrMalformedSignature) {
					t.Errorf("%s: error %v is neither bad nor malformed", fc.name, err)
				}
			}
		})
	}
}

func TestVerifyDigestRejects(t *testing.T) {
	s := newECSigner(t)
	sum := sha256.Sum256([]byte("x"))
	sig, err := s.SignDigest(sum[:])
	if err != nil {
		t.Fatal(err)
	}
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	for _, tc := range []struct {
		name   string
		pub    crypto.PublicKey
		digest []byte
		sig    []byte
		want   error
	}{
		{"ok", s.Public(), sum[:], sig, nil},
		{"short digest", s.Public(), sum[:31], sig, nil},
		{"ed25519 key", edPriv.Public(), sum[:], sig, ErrUnsupportedKey},
		{"p384 key", p384.Public(), sum[:], sig, ErrUnsupportedKey},
		{"rsa-1024 key", small.Public(), sum[:], sig, ErrUnsupportedKey},
		{"nil key", nil, sum[:], sig, ErrUnsupportedKey},
		{"empty sig", s.Public(), sum[:], nil, ErrMalformedSignature},
		{"trailing byte", s.Public(), sum[:], append(append([]byte{}, sig...), 0), ErrMalformedSignature},
	} {
		err := VerifyDigest(tc.pub, tc.digest, tc.sig)
		switch {
		case tc.name == "ok":
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
		case err == nil:
			t.Errorf("%s: verified", tc.name)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestSignerChecksDeviceSignatures(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := NewSigner(brokenSigner{k}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := SignBlob(s, strings.NewReader("x")); err == nil || !errors.Is(err, ErrBadSignature) {
		t.Fatalf("signature from a broken device accepted: %v", err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := NewSigner(p384, nil); !errors.Is(err, ErrUnsupportedKey) {
		t.Fatalf("P-384 signer: %v", err)
	}
}

func TestSignerIsSigstoreSignerVerifier(t *testing.T) {
	opaque := &opaqueSigner{inner: newECSigner(t).s}
	cc := &closeCounter{}
	s, err := NewSigner(opaque, cc)
	if err != nil {
		t.Fatal(err)
	}
	var sv signature.SignerVerifier = s
	msg := []byte("launch record")
	sig, err := sv.SignMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if opaque.calls != 1 {
		t.Fatalf("inner signer called %d times", opaque.calls)
	}
	if err := sv.VerifySignature(bytes.NewReader(sig), bytes.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	// Sigstore's own verifier for the same key accepts our signature...
	ref, err := signature.LoadVerifier(s.Public(), crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := ref.VerifySignature(bytes.NewReader(sig), bytes.NewReader(msg)); err != nil {
		t.Fatalf("sigstore verifier: %v", err)
	}
	// ...and a precomputed digest option signs the same thing.
	sum := sha256.Sum256(msg)
	sig2, err := sv.SignMessage(nil, options.WithDigest(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	if err := ref.VerifySignature(bytes.NewReader(sig2), bytes.NewReader(msg)); err != nil {
		t.Fatalf("digest option: %v", err)
	}
	if err := sv.VerifySignature(bytes.NewReader(sig), bytes.NewReader([]byte("other"))); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other message: %v", err)
	}
	if _, err := sv.SignMessage(bytes.NewReader(msg), options.WithCryptoSignerOpts(crypto.SHA512)); err == nil {
		t.Fatal("SHA-512 accepted")
	}
	if err := s.Close(); err != nil || cc.n != 1 {
		t.Fatalf("Close: %v, closer called %d", err, cc.n)
	}
	_ = s.Close()
	if cc.n != 1 {
		t.Fatal("closer called twice")
	}
	if _, err := sv.SignMessage(bytes.NewReader(msg)); err == nil {
		t.Fatal("signed after Close")
	}
}

func TestKeysRoundTripAndCosignFormat(t *testing.T) {
	privPEM, pubPEM, err := GenerateKeyPair([]byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(privPEM)
	if block == nil || block.Type != "ENCRYPTED SIGSTORE PRIVATE KEY" {
		t.Fatalf("private key PEM type %v", block)
	}
	if !bytes.Contains(block.Bytes, []byte(`"name":"scrypt"`)) || !bytes.Contains(block.Bytes, []byte(`"name":"nacl/secretbox"`)) {
		t.Fatalf("not cosign's scrypt+secretbox envelope: %s", block.Bytes)
	}
	pub, err := LoadVerifier(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	pw := func(p string) func() ([]byte, error) { return func() ([]byte, error) { return []byte(p), nil } }
	priv, err := ParsePrivateKey(privPEM, pw("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	if !equalKeys(pub, priv.Public()) {
		t.Fatal("public key does not match private key")
	}
	// sigstore's cryptoutils (what cosign uses) reads our private key.
	theirs, err := cryptoutils.UnmarshalPEMToPrivateKey(privPEM, func(bool) ([]byte, error) { return []byte("hunter2"), nil })
	if err != nil {
		t.Fatalf("cryptoutils cannot read our key: %v", err)
	}
	if !equalKeys(pub, theirs.(crypto.Signer).Public()) {
		t.Fatal("cryptoutils read another key")
	}
	// And we read a key encrypted by cryptoutils (cosign's library).
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := cryptoutils.MarshalPrivateKeyToEncryptedDER(k, func(bool) ([]byte, error) { return []byte("pw"), nil })
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{PrivateKeyPEMType, LegacyPrivateKeyPEMType} {
		got, err := ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), pw("pw"))
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if !k.PublicKey.Equal(got.Public()) {
			t.Fatalf("%s: other key", typ)
		}
	}

	// Failure cases.
	if _, err := ParsePrivateKey(privPEM, pw("wrong")); !errors.Is(err, ErrKeyDecrypt) {
		t.Errorf("wrong password: %v", err)
	}
	if _, err := ParsePrivateKey(privPEM, pw("")); !errors.Is(err, ErrKeyDecrypt) {
		t.Errorf("empty password for a protected key: %v", err)
	}
	if _, err := ParsePrivateKey(privPEM, nil); err == nil {
		t.Error("no password func accepted")
	}
	if _, err := ParsePrivateKey(privPEM, func() ([]byte, error) { return nil, errors.New("no tty") }); err == nil || !strings.Contains(err.Error(), "no tty") {
		t.Errorf("password error: %v", err)
	}
	if _, err := ParsePrivateKey([]byte("garbage"), pw("")); !errors.Is(err, ErrMalformedKey) {
		t.Errorf("garbage: %v", err)
	}
	if _, err := ParsePrivateKey(pubPEM, pw("")); !errors.Is(err, ErrMalformedKey) {
		t.Errorf("public key as private: %v", err)
	}
	corrupt := pem.EncodeToMemory(&pem.Block{Type: PrivateKeyPEMType, Bytes: []byte(`{"kdf":{}}`)})
	if _, err := ParsePrivateKey(corrupt, pw("")); !errors.Is(err, ErrKeyDecrypt) {
		t.Errorf("corrupt envelope: %v", err)
	}
	if _, err := LoadVerifier(privPEM); !errors.Is(err, ErrMalformedKey) {
		t.Errorf("private key as public: %v", err)
	}
	if _, err := LoadVerifier(append(append([]byte{}, pubPEM...), pubPEM...)); !errors.Is(err, ErrMalformedKey) {
		t.Errorf("two public keys: %v", err)
	}
	if _, err := LoadVerifier(bytes.Repeat([]byte("A"), MaxKeyFileSize+1)); !errors.Is(err, ErrMalformedKey) {
		t.Errorf("huge: %v", err)
	}

	// Empty password: allowed, still in cosign's envelope.
	privEmpty, _, err := GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(privEmpty); b.Type != PrivateKeyPEMType {
		t.Fatalf("empty-password key type %q", b.Type)
	}
	if _, err := ParsePrivateKey(privEmpty, pw("")); err != nil {
		t.Fatal(err)
	}
}

func TestKeyIDAndHint(t *testing.T) {
	// A fixed key with golden fingerprints computed by openssl:
	//   openssl pkey -pubin -in k.pub -outform DER | sha256sum
	//   openssl pkey -pubin -in k.pub -outform DER | openssl dgst -sha256 -binary | base64
	pubPEM := []byte(`-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEfx79TMZeuKGC4n1fO4YvkMVQQzVX
iaa8Gdxy4o5wtaaCs8+04vlkb9MnGCbc6DOYhvDQMc5pohf7g7WKfjPtWA==
-----END PUBLIC KEY-----
`)
	pub, err := LoadVerifier(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := KeyID(pub), "sha256:400ecf793483cfac85213152312e2a8efae1c062756c8a52b71de464fdfa68b7"; got != want {
		t.Fatalf("KeyID %s, want %s", got, want)
	}
	if got, want := KeyHint(pub), "QA7PeTSDz6yFITFSMS4qjvrhwGJ1bIpStx3kZP36aLc="; got != want {
		t.Fatalf("KeyHint %s, want %s", got, want)
	}
	if KeyID(nil) != "" {
		t.Fatal("KeyID(nil) not empty")
	}
}

func TestLoadSignerFile(t *testing.T) {
	dir := t.TempDir()
	privPEM, pubPEM, err := GenerateKeyPair([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "cosign.key")
	if err := os.WriteFile(keyPath, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(keyPath, func() ([]byte, error) { return []byte("pw"), nil })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pub, _ := LoadVerifier(pubPEM)
	if s.KeyID() != KeyID(pub) {
		t.Fatal("loaded another key")
	}
	if _, err := LoadSigner(filepath.Join(dir, "missing.key"), nil); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing key: %v", err)
	}
	if _, err := LoadSigner("", nil); err == nil {
		t.Fatal("empty key ref accepted")
	}
	// A TPM key is the caller's to open (NewSigner over its crypto.Signer),
	// not a file named "tpm:sim".
	if _, err := LoadSigner("tpm:sim", nil); err == nil || !strings.Contains(err.Error(), "names a TPM key") {
		t.Fatalf("tpm: key ref: %v", err)
	}
	if _, err := LoadSigner(keyPath, func() ([]byte, error) { return []byte("nope"), nil }); !errors.Is(err, ErrKeyDecrypt) {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestReadSidecars(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadSignatureFile(filepath.Join(dir, "k.sig")); !errors.Is(err, ErrNoSignature) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
	big := filepath.Join(dir, "big.sig")
	if err := os.WriteFile(big, bytes.Repeat([]byte("A"), MaxSignatureFileSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSignatureFile(big); err == nil || errors.Is(err, ErrNoSignature) {
		t.Fatalf("oversized: %v", err)
	}
	if s, p := ImagePaths("/x/img/"); s != "/x/img.sig" || p != "/x/img.payload.json" {
		t.Fatalf("ImagePaths: %s %s", s, p)
	}
	if SignaturePath("/k/vmlinuz") != "/k/vmlinuz.sig" || BundlePath("/k/vmlinuz") != "/k/vmlinuz.bundle.json" {
		t.Fatal("sidecar names")
	}
}

// equalKeys reports whether a and b are the same public key.
func equalKeys(a, b crypto.PublicKey) bool {
	switch k := a.(type) {
	case *ecdsa.PublicKey:
		return k.Equal(b)
	case *rsa.PublicKey:
		return k.Equal(b)
	}
	return false
}
