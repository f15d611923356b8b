package wrap

import (
	"bytes"
	"errors"
	"testing"
)

func TestRoundTripAndRefusals(t *testing.T) {
	guest, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("db-password")
	ct, err := Seal(guest.PublicKey(), "sb1", "db", secret)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, secret) {
		t.Fatal("ciphertext contains the plaintext")
	}
	got, err := guest.Open("sb1", "db", ct)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	tampered := bytes.Clone(ct)
	tampered[len(tampered)-1] ^= 1
	for _, tc := range []struct {
		name          string
		key           *PrivateKey
		sandbox, secr string
		ct            []byte
	}{
		{"other key", other, "sb1", "db", ct},
		{"other sandbox", guest, "sb2", "db", ct},
		{"other name", guest, "sb1", "api", ct},
		{"tampered", guest, "sb1", "db", tampered},
		{"truncated", guest, "sb1", "db", ct[:10]},
		{"empty", guest, "sb1", "db", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.key.Open(tc.sandbox, tc.secr, tc.ct); !errors.Is(err, ErrOpen) {
				t.Fatalf("Open = %v, want ErrOpen", err)
			}
		})
	}
	if _, err := Seal([]byte("short"), "sb1", "db", secret); err == nil {
		t.Fatal("Seal accepted a short public key")
	}
	if _, err := Seal(guest.PublicKey(), "sb1", "db", make([]byte, MaxSecretSize+1)); err == nil {
		t.Fatal("Seal accepted an oversized secret")
	}
}
