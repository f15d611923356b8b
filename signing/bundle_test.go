package signing

import (
	"bytes"
	"crypto"
	"errors"
	"strings"
	"testing"
	"time"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"
	"google.golang.org/protobuf/encoding/protojson"
)

// verifyWithSigstoreGo verifies a bundle with sigstore-go alone, the way a
// third party would: trusted key material, no timestamps, key policy.
func verifyWithSigstoreGo(t *testing.T, pub crypto.PublicKey, artifact, bundleJSON []byte) error {
	t.Helper()
	var b bundle.Bundle
	if err := b.UnmarshalJSON(bundleJSON); err != nil {
		return err
	}
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	tm := root.NewTrustedPublicKeyMaterialFromMapping(map[string]*root.ExpiringKey{
		KeyHint(pub): root.NewExpiringKey(v, time.Time{}, time.Time{}),
	})
	sev, err := verify.NewVerifier(tm, verify.WithNoObserverTimestamps())
	if err != nil {
		t.Fatal(err)
	}
	_, err = sev.Verify(&b, verify.NewPolicy(verify.WithArtifact(bytes.NewReader(artifact)), verify.WithKey()))
	return err
}

func TestBundle(t *testing.T) {
	s := newECSigner(t)
	other := newECSigner(t)
	blob := []byte("policy: v1\n")
	bj, err := SignBundle(s, bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(bj, []byte(BundleMediaType)) {
		t.Fatalf("bundle %s", bj)
	}
	if err := VerifyBundle(s.Public(), bytes.NewReader(blob), bj); err != nil {
		t.Fatalf("VerifyBundle: %v", err)
	}
	if err := verifyWithSigstoreGo(t, s.Public(), blob, bj); err != nil {
		t.Fatalf("sigstore-go rejects our bundle: %v", err)
	}
	if err := verifyWithSigstoreGo(t, s.Public(), []byte("other"), bj); err == nil {
		t.Fatal("sigstore-go accepts our bundle for another artifact")
	}

	// Failure cases.
	var pbm protobundle.Bundle
	if err := protojson.Unmarshal(bj, &pbm); err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(*protobundle.Bundle)) []byte {
		c := protoClone(t, &pbm)
		f(c)
		b, err := protojson.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name   string
		pub    crypto.PublicKey
		blob   []byte
		bundle []byte
		want   error
	}{
		{"tampered blob", s.Public(), []byte("policy: v2\n"), bj, ErrBadSignature},
		{"wrong key", other.Public(), blob, bj, ErrBadSignature},
		{"garbage", s.Public(), blob, []byte("{not json"), ErrMalformedBundle},
		{"empty", s.Public(), blob, nil, ErrMalformedBundle},
		{"huge", s.Public(), blob, bytes.Repeat([]byte(" "), MaxBundleSize+1), ErrMalformedBundle},
		{"bad media type", s.Public(), blob, mutate(func(b *protobundle.Bundle) { b.MediaType = "application/json" }), ErrMalformedBundle},
		{"sha512 digest", s.Public(), blob, mutate(func(b *protobundle.Bundle) {
			b.GetMessageSignature().MessageDigest.Algorithm = protocommon.HashAlgorithm_SHA2_512
		}), ErrMalformedBundle},
		{"signature flipped", s.Public(), blob, mutate(func(b *protobundle.Bundle) {
			sig := b.GetMessageSignature().Signature
			sig[len(sig)-1] ^= 1
		}), nil},
		{"signature removed", s.Public(), blob, mutate(func(b *protobundle.Bundle) {
			b.GetMessageSignature().Signature = nil
		}), ErrMalformedSignature},
		{"certificate instead of key", s.Public(), blob, mutate(func(b *protobundle.Bundle) {
			b.VerificationMaterial.Content = &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: []byte{0x30}}}
		}), ErrMalformedBundle},
		{"digest of another blob", s.Public(), blob, mutate(func(b *protobundle.Bundle) {
			b.GetMessageSignature().MessageDigest.Digest[0] ^= 1
		}), ErrBadSignature},
	} {
		err := VerifyBundle(tc.pub, bytes.NewReader(tc.blob), tc.bundle)
		if err == nil {
			t.Errorf("%s: verified", tc.name)
			continue
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if strings.Contains(err.Error(), "panic") {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func protoClone(t *testing.T, b *protobundle.Bundle) *protobundle.Bundle {
	t.Helper()
	j, err := protojson.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var c protobundle.Bundle
	if err := protojson.Unmarshal(j, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}
