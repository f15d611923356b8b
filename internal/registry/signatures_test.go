package registry

import (
	"bytes"
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
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bulwark-project/bulwark/internal/cosigntest"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/signing"
)

// TestSignaturesFromRegistryIntoLayout: the signatures 'cosign sign' put in
// a registry are found by digest, written into a layout of the image as
// 'cosign save' would, read back from it, and verify against the digest the
// layout measures to; the layout still opens as the one image.
func TestSignaturesFromRegistryIntoLayout(t *testing.T) {
	cosign := cosigntest.Binary(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	push := func(tag string) (string, string) {
		img, err := random.Image(1024, 1)
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := img.ConfigFile()
		cfg = cfg.DeepCopy()
		cfg.OS, cfg.Architecture = "linux", "amd64"
		if img, err = mutate.ConfigFile(img, cfg); err != nil {
			t.Fatal(err)
		}
		ref, _ := name.ParseReference(host+"/app:"+tag, name.Insecure)
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		dir := filepath.Join(t.TempDir(), "layout")
		p, err := layout.Write(dir, empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.AppendImage(img); err != nil {
			t.Fatal(err)
		}
		return d.String(), dir
	}
	signedDigest, signedDir := push("signed")
	unsignedDigest, _ := push("unsigned")

	keys := t.TempDir()
	env := append(os.Environ(), "COSIGN_PASSWORD=test-password", "HOME="+t.TempDir())
	gen := exec.Command(cosign, "generate-key-pair")
	gen.Dir, gen.Env = keys, env
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	sign := exec.Command(cosign, "sign", "--key", filepath.Join(keys, "cosign.key"), "--tlog-upload=false", "--allow-http-registry", "-y", host+"/app@"+signedDigest)
	sign.Env = env
	if out, err := sign.CombinedOutput(); err != nil {
		t.Fatalf("cosign sign: %v\n%s", err, out)
	}
	pub, err := signing.LoadVerifierFile(filepath.Join(keys, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	sigs, err := Signatures(ctx, host+"/app", signedDigest, Options{Insecure: true})
	if err != nil || len(sigs) != 1 {
		t.Fatalf("signatures of the signed image: %d, %v; want 1", len(sigs), err)
	}
	if err := signing.VerifyImage(pub, sigs[0].Payload, sigs[0].SignatureB64, signedDigest); err != nil {
		t.Fatalf("the registry's signature does not verify: %v", err)
	}
	if none, err := Signatures(ctx, host+"/app", unsignedDigest, Options{Insecure: true}); err != nil || len(none) != 0 {
		t.Fatalf("signatures of the unsigned image: %d, %v; want none", len(none), err)
	}
	if _, err := Signatures(ctx, host+"/app", "sha256:nothex", Options{Insecure: true}); err == nil {
		t.Fatal("a malformed digest was accepted")
	}

	if err := AppendLayoutSignatures(signedDir, sigs); err != nil {
		t.Fatal(err)
	}
	back, err := LayoutSignatures(signedDir)
	if err != nil || len(back) != 1 || !bytes.Equal(back[0].Payload, sigs[0].Payload) || !bytes.Equal(back[0].SignatureB64, sigs[0].SignatureB64) {
		t.Fatalf("signatures read back from the layout: %+v, %v", back, err)
	}
	im, err := measure.OpenImage(ctx, signedDir, measure.ImageOptions{})
	if err != nil {
		t.Fatalf("the layout with signatures no longer opens as an image: %v", err)
	}
	defer im.Close()
	if im.ManifestDigest != signedDigest {
		t.Fatalf("layout measures to %s, want %s", im.ManifestDigest, signedDigest)
	}
	// A signature with a payload past the bound is not written.
	if err := AppendLayoutSignatures(signedDir, []Signature{{Payload: make([]byte, maxPayloadSize+1), SignatureB64: []byte("c2ln")}}); err == nil {
		t.Fatal("an oversized payload was written")
	}
}
