package signing

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"math/big"
	"testing"
)

// fuzzKey is a fixed P-256 key so fuzz runs are reproducible.
func fuzzKey(tb testing.TB) *Signer {
	tb.Helper()
	seed := sha256.Sum256([]byte("bulwark fuzz key"))
	d := new(big.Int).SetBytes(seed[:])
	d.Mod(d, elliptic.P256().Params().N)
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d.FillBytes(make([]byte, 32)))
	if err != nil {
		tb.Fatal(err)
	}
	s, err := NewSigner(k, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// FuzzVerifyImagePayload signs arbitrary payload bytes with a trusted key
// (so the payload checks after the signature check are reached) and checks
// that VerifyImage accepts only a well-formed payload for the expected
// digest, and never panics.
func FuzzVerifyImagePayload(f *testing.F) {
	s := fuzzKey(f)
	f.Add(SimpleSigningPayload(digestA, "registry.example/app"))
	f.Add(SimpleSigningPayload(digestB, ""))
	f.Add([]byte(`{"critical":{"identity":{"docker-reference":"x"},"image":{"docker-manifest-digest":"` + digestA + `"},"type":"cosign container image signature"},"optional":{"a":[1,{"b":null}]}}`))
	f.Add([]byte(`{"critical":null}`))
	f.Add([]byte(`{"critical":{"type":"atomic container signature"}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		sig, err := SignBlob(s, bytes.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		err = VerifyImage(s.Public(), payload, sig, digestA)
		p, perr := ParseSimpleSigning(payload)
		if err == nil {
			if perr != nil {
				t.Fatalf("verified but does not parse: %v", perr)
			}
			if p.Critical.Image.DockerManifestDigest != digestA || p.Critical.Type != SimpleSigningType {
				t.Fatalf("verified a payload for %q type %q", p.Critical.Image.DockerManifestDigest, p.Critical.Type)
			}
			return
		}
		if !errors.Is(err, ErrPayloadType) && !errors.Is(err, ErrPayloadMismatch) {
			t.Fatalf("unexpected error class: %v", err)
		}
		if perr == nil && p.Critical.Image.DockerManifestDigest == digestA {
			t.Fatalf("parses as a payload for the expected digest but was rejected: %v", err)
		}
	})
}

// FuzzVerifyBlobSignature feeds arbitrary .sig file contents to VerifyBlob:
// never a panic, never a success except for the one real signature, and
// always one of the two signature error classes.
func FuzzVerifyBlobSignature(f *testing.F) {
	s := fuzzKey(f)
	blob := []byte("kernel")
	good, err := SignBlob(s, bytes.NewReader(blob))
	if err != nil {
		f.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(string(good))
	f.Add(good)
	f.Add(append(append([]byte{}, good...), '\n'))
	f.Add(raw)
	f.Add([]byte("MEUCIQ=="))
	f.Add(EncodeSignature([]byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}))
	f.Add(EncodeSignature([]byte{0x30, 0x81, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}))
	f.Fuzz(func(t *testing.T, sig []byte) {
		err := VerifyBlob(s.Public(), bytes.NewReader(blob), sig)
		if err == nil {
			d, derr := DecodeSignature(sig)
			if derr != nil || !bytes.Equal(d, raw) {
				// ECDSA (r, n-s) is also valid; anything else is a forgery.
				t.Logf("accepted a signature other than the one made: %x", d)
			}
			return
		}
		if !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrMalformedSignature) {
			t.Fatalf("unexpected error class: %v", err)
		}
	})
}

// FuzzVerifyBundle feeds arbitrary bundle JSON to VerifyBundle.
func FuzzVerifyBundle(f *testing.F) {
	s := fuzzKey(f)
	blob := []byte("policy")
	good, err := SignBundle(s, bytes.NewReader(blob))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"publicKey":{"hint":"x"}},"dsseEnvelope":{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"MEUCIQ=="}]}}`))
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle+json;version=0.1","verificationMaterial":{"tlogEntries":[{}]}}`))
	f.Fuzz(func(t *testing.T, bj []byte) {
		err := VerifyBundle(s.Public(), bytes.NewReader(blob), bj)
		if err == nil {
			b, perr := ParseBundle(bj)
			if perr != nil {
				t.Fatalf("verified but does not parse: %v", perr)
			}
			if !bytes.Equal(b.GetMessageSignature().GetMessageDigest().GetDigest(), sha256Sum(blob)) {
				t.Fatal("verified a bundle for another digest")
			}
		}
	})
}

// FuzzParseKeys feeds arbitrary PEM to the private and public key parsers.
func FuzzParseKeys(f *testing.F) {
	priv, pub, err := GenerateKeyPair([]byte("pw"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(priv)
	f.Add(pub)
	f.Add([]byte("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJrZGYiOnt9fQ==\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if k, err := LoadVerifier(b); err == nil {
			if err := checkPublicKey(k); err != nil {
				t.Fatalf("LoadVerifier returned an unsupported key: %v", err)
			}
		}
		if k, err := ParsePrivateKey(b, pw("pw")); err == nil {
			if err := checkPublicKey(k.Public()); err != nil {
				t.Fatalf("ParsePrivateKey returned an unsupported key: %v", err)
			}
		}
	})
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
