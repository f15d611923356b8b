package signing

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

const (
	digestA = "sha256:" + "aa11111111111111111111111111111111111111111111111111111111111111"
	digestB = "sha256:" + "bb22222222222222222222222222222222222222222222222222222222222222"
)

func TestImageSignVerify(t *testing.T) {
	s := newECSigner(t)
	other := newECSigner(t)
	p, sig, err := SignImage(s, digestA, "registry.example/app")
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyImage(s.Public(), p, sig, digestA); err != nil {
		t.Fatalf("VerifyImage: %v", err)
	}
	parsed, err := ParseSimpleSigning(p)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Critical.Identity.DockerReference != "registry.example/app" || parsed.Critical.Image.DockerManifestDigest != digestA {
		t.Fatalf("parsed %+v", parsed.Critical)
	}

	// Sign a payload of our own making (already validly signed) to test
	// the payload checks that come after the signature check.
	signPayload := func(p string) []byte {
		sig, err := SignBlob(s, strings.NewReader(p))
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	wrongType := strings.Replace(string(p), SimpleSigningType, "atomic container signature", 1)
	unknownCritical := strings.Replace(string(p), `"type":`, `"extra":1,"type":`, 1)
	noType := `{"critical":{"identity":{"docker-reference":""},"image":{"docker-manifest-digest":"` + digestA + `"}},"optional":null}`
	badDigest := strings.Replace(string(p), digestA, "sha256:AA", 1)
	trailing := string(p) + `{}`
	for _, tc := range []struct {
		name    string
		pub     any
		payload []byte
		sig     []byte
		digest  string
		want    error
	}{
		{"payload for another digest", s.Public(), p, sig, digestB, ErrPayloadMismatch},
		{"wrong key", other.Public(), p, sig, digestA, ErrBadSignature},
		{"tampered payload", s.Public(), bytes.Replace(p, []byte("app"), []byte("evil"), 1), sig, digestA, ErrBadSignature},
		{"garbage signature", s.Public(), p, []byte("%%%"), digestA, ErrMalformedSignature},
		{"wrong payload type", s.Public(), []byte(wrongType), signPayload(wrongType), digestA, ErrPayloadType},
		{"unknown critical field", s.Public(), []byte(unknownCritical), signPayload(unknownCritical), digestA, ErrPayloadType},
		{"missing type", s.Public(), []byte(noType), signPayload(noType), digestA, ErrPayloadType},
		{"malformed digest in payload", s.Public(), []byte(badDigest), signPayload(badDigest), digestA, ErrPayloadType},
		{"trailing data", s.Public(), []byte(trailing), signPayload(trailing), digestA, ErrPayloadType},
		{"not JSON", s.Public(), []byte("hello"), signPayload("hello"), digestA, ErrPayloadType},
		{"invalid expected digest", s.Public(), p, sig, "sha256:xyz", nil},
	} {
		err := VerifyImage(tc.pub, tc.payload, tc.sig, tc.digest)
		if err == nil {
			t.Errorf("%s: verified", tc.name)
			continue
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, _, err := SignImage(s, "latest", ""); err == nil {
		t.Error("SignImage accepted a tag as digest")
	}
}

// Our payload is the one sigstore's payload package (used by cosign) builds
// and parses.
func TestSimpleSigningMatchesSigstore(t *testing.T) {
	d, err := name.NewDigest("registry.example/app@" + digestA)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := json.Marshal(payload.Cosign{Image: d})
	if err != nil {
		t.Fatal(err)
	}
	ours := SimpleSigningPayload(digestA, "registry.example/app")
	if !bytes.Equal(ours, theirs) {
		t.Fatalf("payload differs:\nours   %s\ntheirs %s", ours, theirs)
	}
	var back payload.Cosign
	if err := json.Unmarshal(ours, &back); err != nil {
		t.Fatal(err)
	}
	if back.Image.DigestStr() != digestA {
		t.Fatalf("sigstore parsed digest %s", back.Image.DigestStr())
	}
	// And we parse a payload with annotations, as `cosign sign -a k=v` makes.
	withAnn, _ := json.Marshal(payload.Cosign{Image: d, Annotations: map[string]any{"k": "v"}})
	p, err := ParseSimpleSigning(withAnn)
	if err != nil {
		t.Fatal(err)
	}
	if p.Optional["k"] != "v" {
		t.Fatalf("optional %v", p.Optional)
	}
}

func TestPayloadErrorReason(t *testing.T) {
	_, err := ParseSimpleSigning([]byte(`{"critical":{"identity":{"docker-reference":"x"},"image":{"docker-manifest-digest":"sha256:00"},"type":"cosign container image signature"}}`))
	var pe *PayloadError
	if !errors.As(err, &pe) || !errors.Is(err, ErrPayloadType) {
		t.Fatalf("err = %v, want a *PayloadError matching ErrPayloadType", err)
	}
	if want := ErrPayloadType.Error() + ": critical.image.docker-manifest-digest \"sha256:00\" is not sha256:<64 hex>"; pe.Reason() != want || err.Error() != "signing: "+want {
		t.Fatalf("Reason() = %q, Error() = %q", pe.Reason(), err.Error())
	}
}
