package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSignedPolicies(t *testing.T) {
	admin := newTestKey(t)
	other := newTestKey(t)
	adminSigner, err := ParsePublicKey("admin", []byte(admin.pem))
	if err != nil {
		t.Fatal(err)
	}
	signerKey := newTestKey(t)
	withKeyFile := strings.Replace(minimal, "kernel:\n  digests: ["+dA+"]", "signers:\n  r:\n    public_key_file: r.pub\nkernel:\n  signers: [r]", 1)
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		opts  LoadOptions
		want  string // "" = loads and is marked signed
	}{
		{"good signature", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "p.yaml.sig"), admin.sigFile(t, []byte(minimal)))
		}, LoadOptions{RequireSigned: true, AdminKeys: []*Signer{adminSigner}}, ""},
		{"missing signature", func(t *testing.T, dir string) {}, LoadOptions{RequireSigned: true, AdminKeys: []*Signer{adminSigner}}, "no signature file " + "DIR/p.yaml.sig and signed policies are required"},
		{"signature by another key", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "p.yaml.sig"), other.sigFile(t, []byte(minimal)))
		}, LoadOptions{RequireSigned: true, AdminKeys: []*Signer{adminSigner}}, "does not verify with any admin key (" + short(admin.fingerprint(t)) + ")"},
		{"signature over other bytes", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "p.yaml.sig"), admin.sigFile(t, []byte(minimal+"# changed\n")))
		}, LoadOptions{RequireSigned: true, AdminKeys: []*Signer{adminSigner}}, "does not verify with any admin key"},
		{"signature not base64", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "p.yaml.sig"), []byte("!!!"))
		}, LoadOptions{RequireSigned: true, AdminKeys: []*Signer{adminSigner}}, "signature is not base64"},
		{"required without keys", func(t *testing.T, dir string) {}, LoadOptions{RequireSigned: true}, "no admin public key is configured"},
		{"bad signature refused even when not required", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "p.yaml.sig"), other.sigFile(t, []byte(minimal)))
		}, LoadOptions{AdminKeys: []*Signer{adminSigner}}, "does not verify"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "p.yaml"), []byte(minimal))
			tc.setup(t, dir)
			set, err := LoadDir(dir, tc.opts)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if p := set.Get("t"); p == nil || !p.Signed {
					t.Fatalf("policy not loaded as signed: %+v", p)
				}
				return
			}
			if err == nil {
				t.Fatalf("loaded, want error containing %q", tc.want)
			}
			want := strings.ReplaceAll(tc.want, "DIR", dir)
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), filepath.Join(dir, "p.yaml")) {
				t.Fatalf("error %q\nwant it to contain %q", err, want)
			}
		})
	}

	t.Run("key files must be signed too", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "p.yaml"), []byte(withKeyFile))
		writeFile(t, filepath.Join(dir, "p.yaml.sig"), admin.sigFile(t, []byte(withKeyFile)))
		writeFile(t, filepath.Join(dir, "r.pub"), []byte(signerKey.pem))
		opts := LoadOptions{RequireSigned: true, AdminKeys: []*Signer{adminSigner}}
		_, err := LoadDir(dir, opts)
		checkErrors(t, err, filepath.Join(dir, "p.yaml"), wantErr{5, 22, "signers.r.public_key_file: no signature file"})
		writeFile(t, filepath.Join(dir, "r.pub.sig"), admin.sigFile(t, []byte(signerKey.pem)))
		if _, err := LoadDir(dir, opts); err != nil {
			t.Fatal(err)
		}
		// Swapping the key file for another key breaks its signature.
		writeFile(t, filepath.Join(dir, "r.pub"), []byte(other.pem))
		if _, err := LoadDir(dir, opts); err == nil || !strings.Contains(err.Error(), "does not verify") {
			t.Fatalf("swapped key file accepted: %v", err)
		}
	})
}

func TestLoadPublicKeyFile(t *testing.T) {
	dir := t.TempDir()
	k := newTestKey(t)
	writeFile(t, filepath.Join(dir, "a.pub"), []byte(k.pem))
	s, err := LoadPublicKeyFile(filepath.Join(dir, "a.pub"))
	if err != nil || s.Fingerprint != k.fingerprint(t) {
		t.Fatalf("%v %v", s, err)
	}
	writeFile(t, filepath.Join(dir, "big.pub"), make([]byte, MaxKeySize+1))
	if _, err := LoadPublicKeyFile(filepath.Join(dir, "big.pub")); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("oversized key file: %v", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "d.pub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPublicKeyFile(filepath.Join(dir, "d.pub")); err == nil {
		t.Fatal("directory accepted as key file")
	}
}

func TestNewLoadOptions(t *testing.T) {
	if _, err := NewLoadOptions(true, nil); err == nil {
		t.Fatal("requiring signatures with no admin key was accepted")
	}
	if _, err := NewLoadOptions(false, []string{"/nonexistent/key.pub"}); err == nil || !strings.Contains(err.Error(), "/nonexistent/key.pub") {
		t.Fatalf("missing key file: %v", err)
	}
	opts, err := NewLoadOptions(false, nil)
	if err != nil || opts.RequireSigned || len(opts.AdminKeys) != 0 {
		t.Fatalf("no keys, not required: %+v, %v", opts, err)
	}
}

// TestLoadMissingPolicyFile: a policy file named on the command line that
// does not exist gets no hint about paths "relative to the policy file".
func TestLoadMissingPolicyFile(t *testing.T) {
	_, err := LoadFiles([]string{filepath.Join(t.TempDir(), "missing.yaml")}, LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), "cannot read") || strings.Contains(err.Error(), "relative to the policy file") {
		t.Fatalf("got %v", err)
	}
}
