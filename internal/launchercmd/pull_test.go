package launchercmd

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bulwark-project/bulwark/measure"
)

// loopbackRegistry is an OCI registry in this process on 127.0.0.1, and
// pushes images to it.
type loopbackRegistry struct {
	t    *testing.T
	host string
}

func newLoopbackRegistry(t *testing.T) *loopbackRegistry {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return &loopbackRegistry{t: t, host: strings.TrimPrefix(srv.URL, "http://")}
}

// push writes a random image as REPO:TAG and returns REPO@DIGEST.
func (r *loopbackRegistry) push(repo, tag string) (string, v1.Hash) {
	r.t.Helper()
	img, err := random.Image(2048, 2)
	if err != nil {
		r.t.Fatal(err)
	}
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		r.t.Fatal(err)
	}
	return r.pushImage(repo, tag, img)
}

// pushImage writes img as REPO:TAG, as 'crane push' does, and returns
// REPO@DIGEST.
func (r *loopbackRegistry) pushImage(repo, tag string, img v1.Image) (string, v1.Hash) {
	r.t.Helper()
	ref, err := name.ParseReference(r.host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		r.t.Fatal(err)
	}
	d, _ := img.Digest()
	return r.host + "/" + repo + "@" + d.String(), d
}

// cosignSign signs ref in the registry with the real cosign CLI, as a user does.
func cosignSign(t *testing.T, key, password, ref string) {
	t.Helper()
	cmd := exec.Command(cosignBinary(t), "sign", "--key", key, "--tlog-upload=false", "--allow-http-registry", "-y", ref)
	cmd.Env = append(os.Environ(), "COSIGN_PASSWORD="+password, "HOME="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cosign sign %s: %v\n%s", ref, err, out)
	}
}

// TestImagePullFromRegistry: an image signed by 'cosign sign' in a registry
// (on loopback) is pulled by digest with the registry's signature, which
// 'launcher verify' then accepts; an unsigned digest, a digest signed by
// another key, and a tag without --allow-tag are refused.
func TestImagePullFromRegistry(t *testing.T) {
	unsetPassword(t)
	reg := newLoopbackRegistry(t)
	dir := t.TempDir()
	pw := strp("pw")
	for _, k := range []string{"cosign", "other"} {
		if code, out, errs := signCLI(t, pw, "keygen", "--output-key-prefix", filepath.Join(dir, k)); code != 0 {
			t.Fatalf("keygen: %s%s", out, errs)
		}
	}
	signed, signedDigest := reg.push("app", "1")
	cosignSign(t, filepath.Join(dir, "cosign.key"), *pw, signed)
	unsigned, _ := reg.push("app", "2")
	byOther, _ := reg.push("app", "3")
	cosignSign(t, filepath.Join(dir, "other.key"), *pw, byOther)
	pub := filepath.Join(dir, "cosign.pub")
	pull := func(args ...string) (string, string, int) {
		return runLauncher(t, nil, append([]string{"image", "pull", "--allow-http-registry"}, args...)...)
	}

	out := filepath.Join(dir, "signed")
	if so, se, code := pull("-o", out, "--signer", pub, signed); code != 0 || !strings.Contains(so, signedDigest.String()) {
		t.Fatalf("pull of the signed image: exit %d\n%s%s", code, so, se)
	}
	if so, se, code := runLauncher(t, nil, "verify", "--key", pub, "--image", out); code != 0 || !strings.Contains(so, "Verified OK") {
		t.Fatalf("verify of the pulled image: exit %d\n%s%s", code, so, se)
	}
	im, err := measure.OpenImage(context.Background(), out, measure.ImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if im.ManifestDigest != signedDigest.String() {
		t.Fatalf("pulled %s, want %s", im.ManifestDigest, signedDigest)
	}
	im.Close()

	for _, tc := range []struct {
		name, ref string
		args      []string
		code      int
		want      string
	}{
		{"unsigned digest", unsigned, []string{"--signer", pub}, 1, "none of the 0 cosign signature(s) in the registry verifies"},
		{"signed by another key", byOther, []string{"--signer", pub}, 1, "none of the 1 cosign signature(s) in the registry verifies"},
		{"tag without --allow-tag", reg.host + "/app:1", []string{"--signer", pub}, 2, "--allow-tag"},
		{"not a reference", "UPPER/Case@@x", nil, 1, "not an image reference"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := filepath.Join(t.TempDir(), "img")
			so, se, code := pull(append(append([]string{"-o", o}, tc.args...), tc.ref)...)
			if code != tc.code || !strings.Contains(so+se, tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s%s", code, tc.code, tc.want, so, se)
			}
			if ents, _ := os.ReadDir(o); len(ents) > 0 {
				t.Fatalf("a refused pull left %v", ents)
			}
		})
	}

	// 'cosign save' writes a layout holding the image and its signatures
	// as a second manifest: it opens as one image, and verify finds the
	// saved signature inside it.
	saved := filepath.Join(dir, "saved")
	save := exec.Command(cosignBinary(t), "save", "--allow-http-registry", "--dir", saved, signed)
	save.Env = append(os.Environ(), "HOME="+t.TempDir())
	if out, err := save.CombinedOutput(); err != nil {
		t.Fatalf("cosign save: %v\n%s", err, out)
	}
	im, err = measure.OpenImage(context.Background(), saved, measure.ImageOptions{})
	if err != nil {
		t.Fatalf("a cosign save layout: %v", err)
	}
	if im.ManifestDigest != signedDigest.String() {
		t.Fatalf("cosign save layout opened as %s, want %s", im.ManifestDigest, signedDigest)
	}
	im.Close()
	if so, se, code := runLauncher(t, nil, "verify", "--key", pub, "--image", saved); code != 0 || !strings.Contains(so, "saved by cosign") {
		t.Fatalf("verify of a cosign save layout: exit %d\n%s%s", code, so, se)
	}
	if so, se, code := runLauncher(t, nil, "verify", "--key", filepath.Join(dir, "other.pub"), "--image", saved); code != 1 || !strings.Contains(so+se, "NOT verified") {
		t.Fatalf("verify of a cosign save layout with another key: exit %d\n%s%s", code, so, se)
	}

	// By tag, when allowed: the tag's current digest is what is pulled.
	out = filepath.Join(dir, "bytag")
	if so, se, code := pull("--allow-tag", "-o", out, "--signer", pub, reg.host+"/app:1"); code != 0 || !strings.Contains(so, signedDigest.String()) {
		t.Fatalf("pull by tag: exit %d\n%s%s", code, so, se)
	}
}
