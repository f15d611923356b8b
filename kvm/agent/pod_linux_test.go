package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/bulwark-project/bulwark/enclave/wrap"
	"github.com/bulwark-project/bulwark/kvm/channel"
)

// A pod container's environment, working directory and identity are its
// image's with what the host set over them (the spec's, as measured):
// variables replaced or added, the working directory made as its user,
// the user resolved in its own root; and every container has the pod's
// secrets group.
func TestContainerWorkload(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := channel.ImageConfig{Env: []string{"PATH=/bin", "GREETING=hi", "FOO=image"}, WorkingDir: "/srv", User: "app", Entrypoint: []string{"/bin/sh"}}
	for _, tc := range []struct {
		name    string
		cs      channel.ContainerStart
		wantEnv []string
		wantDir string
		wantID  Identity
		wantErr string
	}{
		{name: "the image's", cs: channel.ContainerStart{},
			wantEnv: []string{"PATH=/bin", "GREETING=hi", "FOO=image", "HOME=/home/app", "HOSTNAME=abc"}, wantDir: "/srv",
			wantID: Identity{UID: 1000, GID: 1000, Home: "/home/app", Groups: []uint32{PodSecretsGID}}},
		{name: "the spec's over the image's", cs: channel.ContainerStart{Env: []string{"FOO=bar", "NEW=1"}, WorkingDir: "/tmp/w", User: "2000:0"},
			wantEnv: []string{"PATH=/bin", "GREETING=hi", "FOO=bar", "NEW=1", "HOME=/", "HOSTNAME=abc"}, wantDir: "/tmp/w",
			wantID: Identity{UID: 2000, GID: 0, Home: "/", Groups: []uint32{PodSecretsGID}}},
		{name: "a user not in the image", cs: channel.ContainerStart{User: "ghost"}, wantErr: `user "ghost" not found`},
		{name: "a relative working directory", cs: channel.ContainerStart{WorkingDir: "rel"}, wantErr: "not absolute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			argv, w, err := containerWorkload(root, img, &tc.cs, "abc")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("containerWorkload: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(argv, []string{"/bin/sh"}) || !slices.Equal(w.env, tc.wantEnv) || w.workDir != tc.wantDir ||
				w.id.UID != tc.wantID.UID || w.id.GID != tc.wantID.GID || w.id.Home != tc.wantID.Home || !slices.Equal(w.id.Groups, tc.wantID.Groups) {
				t.Errorf("containerWorkload = %q, %+v; want env %q, dir %q, id %+v", argv, w, tc.wantEnv, tc.wantDir, tc.wantID)
			}
			st, err := os.Stat(filepath.Join(root, tc.wantDir))
			if err != nil || !st.IsDir() {
				t.Fatalf("working directory %s in the root: %v", tc.wantDir, err)
			}
		})
	}
}

// A pod VM's secrets belong to its first container's user and the pod's
// secrets group, readable by the group (every container of the pod has
// it), and stay so when rotated; a sandbox of one workload keeps them to
// its user alone.
func TestSecretsAccess(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: chowns to the pod's secrets group")
	}
	key, err := wrap.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	seal := func(name, v string) channel.Secret {
		w, err := wrap.Seal(key.PublicKey(), "sb1", name, []byte(v))
		if err != nil {
			t.Fatal(err)
		}
		return channel.Secret{Name: name, Wrapped: w}
	}
	first := Identity{UID: 1000, GID: 1000}
	for _, tc := range []struct {
		name              string
		pod               bool
		wantGID           uint32
		wantDir, wantFile os.FileMode
	}{
		{"one workload", false, 1000, 0o500, 0o400},
		{"a pod", true, PodSecretsGID, 0o550, 0o440},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			acc := secretsAccessFor(first, tc.pod)
			if err := unwrapSecrets(dir, key, &channel.Start{SandboxID: "sb1", Secrets: []channel.Secret{seal("db", "v1")}}, acc); err != nil {
				t.Fatal(err)
			}
			kr := &keyring{key: key, sandboxID: "sb1", access: acc}
			check := func(when, want string) {
				t.Helper()
				for p, mode := range map[string]os.FileMode{dir: tc.wantDir, filepath.Join(dir, "db"): tc.wantFile} {
					st, err := os.Stat(p)
					if err != nil {
						t.Fatal(err)
					}
					uid, gid := owner(st)
					if st.Mode().Perm() != mode || uid != 1000 || gid != tc.wantGID {
						t.Errorf("%s: %s: mode %v, owner %d:%d; want %v, 1000:%d", when, p, st.Mode().Perm(), uid, gid, mode, tc.wantGID)
					}
				}
				if b, _ := os.ReadFile(filepath.Join(dir, "db")); string(b) != want {
					t.Errorf("%s: db %q, want %q", when, b, want)
				}
			}
			check("opened", "v1")
			if err := rotateSecrets(dir, kr, []channel.Secret{seal("db", "v2")}); err != nil {
				t.Fatal(err)
			}
			check("rotated", "v2")
		})
	}
}

func owner(st os.FileInfo) (uint32, uint32) {
	s := st.Sys().(*syscall.Stat_t)
	return s.Uid, s.Gid
}
