package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/enclave/wrap"
	"github.com/bulwark-project/bulwark/kvm/channel"
)

func writeSecrets(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("v1-"+n), 0o400); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRemoveSecrets(t *testing.T) {
	dir := t.TempDir()
	writeSecrets(t, dir, "a", "b", "c")
	if n, err := removeSecrets(dir, []string{"b", "gone"}); n != 1 || err != nil {
		t.Fatalf("named: %d, %v", n, err)
	}
	if n, err := removeSecrets(dir, nil); n != 2 || err != nil {
		t.Fatalf("all: %d, %v", n, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left %v", ents)
	}
	if n, err := removeSecrets(filepath.Join(dir, "none"), nil); n != 0 || err != nil {
		t.Fatalf("no directory (no secrets released): %d, %v", n, err)
	}
}

func TestRotateSecrets(t *testing.T) {
	dir := t.TempDir()
	writeSecrets(t, dir, "db", "api")
	key, err := wrap.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	kr := &keyring{key: key, sandboxID: "sb1", access: secretsAccessFor(Identity{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}, false)}
	seal := func(sandbox, name, v string) channel.Secret {
		w, err := wrap.Seal(key.PublicKey(), sandbox, name, []byte(v))
		if err != nil {
			t.Fatal(err)
		}
		return channel.Secret{Name: name, Wrapped: w}
	}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return string(b)
	}
	if err := rotateSecrets(dir, kr, []channel.Secret{seal("sb1", "db", "v2")}); err != nil {
		t.Fatal(err)
	}
	if read("db") != "v2" || read("api") != "v1-api" {
		t.Fatalf("after rotation: db %q, api %q", read("db"), read("api"))
	}
	if fi, err := os.Stat(filepath.Join(dir, "db")); err != nil || fi.Mode().Perm() != 0o400 {
		t.Fatalf("rotated file mode: %v %v", fi, err)
	}
	tests := []struct {
		name string
		kr   *keyring
		sec  channel.Secret
		want string
	}{
		{"another sandbox's", kr, seal("sb2", "db", "x"), "does not open"},
		{"under another name", kr, func() channel.Secret { s := seal("sb1", "api", "x"); s.Name = "db"; return s }(), "does not open"},
		{"a secret not held", kr, seal("sb1", "new", "x"), "not one this guest holds"},
		{"after revocation", &keyring{sandboxID: "sb1"}, seal("sb1", "db", "x"), "no key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := rotateSecrets(dir, tc.kr, []channel.Secret{tc.sec})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if read("db") != "v2" {
				t.Fatalf("db changed to %q", read("db"))
			}
		})
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Fatalf("left behind: %v", ents)
	}
}
