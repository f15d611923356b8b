package signing

import (
	"bytes"
	"errors"
	"testing"
)

// The TPM-held key signs through the same wrapper and its signatures verify
// as any other (here with the in-process reference TPM simulator).
func TestTPMSigner(t *testing.T) {
	s, err := LoadSigner(t.Context(), "tpm:sim", nil)
	if err != nil {
		t.Skipf("TPM simulator unavailable (needs cgo and libssl-dev: apt-get install libssl-dev): %v", err)
	}
	t.Cleanup(func() { s.Close() })
	blob := []byte("launch record")
	sig, err := SignBlob(s, bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyBlob(s.Public(), bytes.NewReader(blob), sig); err != nil {
		t.Fatal(err)
	}
	if err := VerifyBlob(s.Public(), bytes.NewReader([]byte("other")), sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered: %v", err)
	}
	bj, err := SignBundle(s, bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyWithSigstoreGo(t, s.Public(), blob, bj); err != nil {
		t.Fatalf("sigstore-go rejects a TPM-signed bundle: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := SignBlob(s, bytes.NewReader(blob)); err == nil {
		t.Fatal("signed after Close")
	}
}
