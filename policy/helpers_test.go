package policy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// testKey is a signing key pair made for one test.
type testKey struct {
	priv *ecdsa.PrivateKey
	pem  string // PEM public key
}

func newTestKey(t testing.TB) *testKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &testKey{priv: priv, pem: string(pemBytes)}
}

// signBlob signs data exactly as 'cosign sign-blob --key' does: ECDSA over
// the SHA-256 of the bytes, ASN.1 DER.
func (k *testKey) signBlob(t testing.TB, data []byte) []byte {
	t.Helper()
	sum := sha256.Sum256(data)
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// sigFile is the content of a cosign .sig file for data.
func (k *testKey) sigFile(t testing.TB, data []byte) []byte {
	return []byte(base64.StdEncoding.EncodeToString(k.signBlob(t, data)) + "\n")
}

func (k *testKey) fingerprint(t testing.TB) string {
	fp, err := Fingerprint(k.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

// indent prefixes every line of s with n spaces (for block scalars).
func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = pad + l
	}
	return strings.Join(lines, "\n")
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// cosignPayload is cosign's simple-signing payload for an image digest.
func cosignPayload(ref, digest string) []byte {
	return []byte(fmt.Sprintf(`{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, ref, digest))
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
