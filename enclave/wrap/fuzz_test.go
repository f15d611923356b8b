package wrap

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzOpen: the guest opens whatever bytes the launcher forwards (it
// cannot trust them) without panicking; anything but a secret sealed to
// its key for that sandbox and name is ErrOpen, and what opens is exactly
// what was sealed.
func FuzzOpen(f *testing.F) {
	k, err := GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	const sandbox, name = "sb-1", "db-password"
	secret := []byte("correct horse battery staple")
	sealed, err := Seal(k.PublicKey(), sandbox, name, secret)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sandbox, name, sealed)
	f.Add(sandbox, "other", sealed)
	f.Add("sb-2", name, sealed)
	f.Add(sandbox, name, sealed[:PublicKeySize])
	f.Add(sandbox, name, append(bytes.Clone(sealed), 0))
	f.Add(sandbox, name, []byte{})
	f.Add(sandbox+"\x00"+name, "", sealed) // the info string's separator
	f.Fuzz(func(t *testing.T, sb, n string, wrapped []byte) {
		pt, err := k.Open(sb, n, wrapped)
		if err != nil {
			if !errors.Is(err, ErrOpen) || pt != nil {
				t.Fatalf("refusal: %v (plaintext %d bytes)", err, len(pt))
			}
			return
		}
		if sb != sandbox || n != name || !bytes.Equal(wrapped, sealed) || !bytes.Equal(pt, secret) {
			t.Fatalf("opened something not sealed to (%q, %q): %q", sb, n, pt)
		}
	})
}
