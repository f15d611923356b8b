// Package simplesigning is cosign's image signature payload, the "simple
// signing" format of containers/image (containers-signature(5)): building
// it, and parsing it strictly. It needs only the standard library, so the
// policy evaluator can judge a verified payload without linking the
// signature code (package signing verifies the signature over it).
package simplesigning

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
)

// Type is critical.type of cosign's image signature payload.
const Type = "cosign container image signature"

// MaxSize bounds a payload (D.payload.json).
const MaxSize = 64 << 10

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ValidDigest reports whether d is a digest string in the form used across
// Bulwark: "sha256:" followed by 64 lowercase hex digits.
func ValidDigest(d string) bool { return digestRE.MatchString(d) }

// Payload is a simple-signing payload.
type Payload struct {
	Critical Critical `json:"critical"`
	// Optional holds annotations; nil when there are none. It is signed
	// but not interpreted.
	Optional map[string]any `json:"optional"`
}

// Critical is the part of the payload a verifier must check.
type Critical struct {
	Identity struct {
		DockerReference string `json:"docker-reference"`
	} `json:"identity"`
	Image struct {
		DockerManifestDigest string `json:"docker-manifest-digest"`
	} `json:"image"`
	Type string `json:"type"`
}

// Build returns the payload cosign signs for an image: its manifest digest
// ("sha256:<hex>") and the reference the signer claims for it (e.g.
// "registry.example/app"; for a local OCI layout any name the signer
// chooses, or ""). The bytes are what gets signed and must be kept as they
// are (D.payload.json).
func Build(manifestDigest, dockerReference string) []byte {
	var p Payload
	p.Critical.Identity.DockerReference = dockerReference
	p.Critical.Image.DockerManifestDigest = manifestDigest
	p.Critical.Type = Type
	b, err := json.Marshal(p)
	if err != nil { // strings and a nil map: cannot happen
		panic("simplesigning: marshalling a payload: " + err.Error())
	}
	return b
}

// ErrType: a payload is not a cosign simple-signing payload (wrong
// critical.type or malformed JSON).
var ErrType = errors.New("signature payload is not a cosign container image signature")

// Error says why a payload is not a cosign simple-signing payload. It
// matches ErrType (errors.Is).
type Error struct {
	Detail string // what is wrong, e.g. "critical.type is missing"
}

func (e *Error) Error() string { return "signing: " + e.Reason() }

// Reason is the error without the package's prefix, as a verdict's reason.
func (e *Error) Reason() string { return ErrType.Error() + ": " + e.Detail }

func (e *Error) Unwrap() error { return ErrType }

func payloadErr(format string, args ...any) error {
	return &Error{Detail: fmt.Sprintf(format, args...)}
}

// Parse parses a payload strictly: one JSON object with only "critical"
// and "optional"; "critical" with only "identity", "image" and "type", each
// present; type Type; a well-formed manifest digest. It does not check any
// signature: call it only on a payload whose signature verified
// (signing.VerifyImage does both).
func Parse(payload []byte) (*Payload, error) {
	if len(payload) > MaxSize {
		return nil, payloadErr("payload is %d bytes, more than %d", len(payload), MaxSize)
	}
	var top struct {
		Critical json.RawMessage `json:"critical"`
		Optional json.RawMessage `json:"optional"`
	}
	if err := decodeStrict(payload, &top); err != nil {
		return nil, payloadErr("%v", err)
	}
	if len(top.Critical) == 0 {
		return nil, payloadErr("no \"critical\" object")
	}
	var crit struct {
		Identity *struct {
			DockerReference *string `json:"docker-reference"`
		} `json:"identity"`
		Image *struct {
			DockerManifestDigest *string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type *string `json:"type"`
	}
	if err := decodeStrict(top.Critical, &crit); err != nil {
		return nil, payloadErr("critical: %v", err)
	}
	switch {
	case crit.Type == nil:
		return nil, payloadErr("critical.type is missing")
	case *crit.Type != Type:
		return nil, payloadErr("critical.type is %q, want %q", *crit.Type, Type)
	case crit.Image == nil || crit.Image.DockerManifestDigest == nil:
		return nil, payloadErr("critical.image.docker-manifest-digest is missing")
	case !ValidDigest(*crit.Image.DockerManifestDigest):
		return nil, payloadErr("critical.image.docker-manifest-digest %q is not sha256:<64 hex>", *crit.Image.DockerManifestDigest)
	case crit.Identity == nil || crit.Identity.DockerReference == nil:
		return nil, payloadErr("critical.identity.docker-reference is missing")
	}
	out := &Payload{}
	out.Critical.Type = *crit.Type
	out.Critical.Image.DockerManifestDigest = *crit.Image.DockerManifestDigest
	out.Critical.Identity.DockerReference = *crit.Identity.DockerReference
	if len(top.Optional) > 0 && !bytes.Equal(bytes.TrimSpace(top.Optional), []byte("null")) {
		if err := json.Unmarshal(top.Optional, &out.Optional); err != nil {
			return nil, payloadErr("optional is not an object: %v", err)
		}
	}
	return out, nil
}

// decodeStrict decodes exactly one JSON value into v, rejecting unknown
// fields and trailing data.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}
