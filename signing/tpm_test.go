package signing

import (
	"bytes"
	"errors"
	"testing"

	"github.com/bulwark-project/bulwark/tpm"
)

// The TPM-held key signs through the same wrapper and its signatures verify
// as any other (here with the in-process reference TPM simulator). The
// package takes the key as a crypto.Signer; only this test opens a TPM.
func TestTPMSigner(t *testing.T) {
	tp, err := tpm.Open(t.Context(), "sim")
	if err != nil {
		t.Skipf("TPM simulator unavailable (needs cgo and libssl-dev: apt-get install libssl-dev): %v", err)
	}
	cs, err := tp.Signer(t.Context())
	if err != nil {
		tp.Close()
		t.Fatal(err)
	}
	s, err := NewSigner(cs, tp)
	if err != nil {
		tp.Close()
		t.Fatal(err)
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
