package launchercmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/signing"
)

// loadSigner opens both kinds of key reference: a cosign key file and a
// TPM's signing key (here the in-process simulator).
func TestLoadSigner(t *testing.T) {
	priv, _, err := signing.GenerateKeyPair([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(t.TempDir(), "cosign.key")
	if err := os.WriteFile(keyPath, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	pw := func() ([]byte, error) { return []byte("pw"), nil }
	for _, tc := range []struct {
		name, ref string
		want      string // "" = success
	}{
		{"key file", keyPath, ""},
		{"TPM simulator", "tpm:sim", ""},
		{"TPM that does not exist", "tpm:" + filepath.Join(t.TempDir(), "no-such-tpm"), "opening TPM"},
		{"no key", "", "no key given"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := loadSigner(t.Context(), tc.ref, pw)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("loadSigner(%q) = %v, want an error containing %q", tc.ref, err, tc.want)
				}
				return
			}
			if err != nil {
				if tc.ref == "tpm:sim" {
					t.Skipf("TPM simulator unavailable (needs cgo and libssl-dev): %v", err)
				}
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := signing.SignBlob(s, strings.NewReader("x")); err != nil {
				t.Fatal(err)
			}
		})
	}
}
