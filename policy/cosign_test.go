package policy

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/cosigntest"
	"github.com/bulwark-project/bulwark/measure"
)

// TestCosignInterop signs a policy, its signer key file, a kernel and an
// image payload with the real cosign CLI, and checks that the policy loads
// as signed and allows exactly that launch.
func TestCosignInterop(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the cosign CLI; skipped with -short")
	}
	cosign := cosigntest.Binary(t)
	dir := t.TempDir()
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(cosign, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=test-password", "COSIGN_YES=true")
		out, err := cmd.Output()
		if err != nil {
			var stderr string
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		return out
	}
	signBlob := func(name string) []byte {
		t.Helper()
		run("sign-blob", "--key", "cosign.key", "--tlog-upload=false", "--output-signature", name+".sig", name)
		b, err := os.ReadFile(filepath.Join(dir, name+".sig"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	decode := func(b []byte) []byte {
		t.Helper()
		d, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	run("generate-key-pair")
	kernel := make([]byte, 100000)
	rand.Read(kernel)
	writeFile(t, filepath.Join(dir, "vmlinux"), kernel)
	kernelSig := decode(signBlob("vmlinux"))

	image := digestOf([]byte("a manifest"))
	payload := run("generate", "registry.example/web@"+image)
	payload = []byte(strings.TrimRight(string(payload), "\n"))
	writeFile(t, filepath.Join(dir, "payload.json"), payload)
	imageSig := decode(signBlob("payload.json"))

	pdir := filepath.Join(dir, "policies")
	doc := `apiVersion: bulwark.dev/v1
name: web
signers:
  release:
    public_key_file: release.pub
kernel:
  signers: [release]
cmdline:
  exact: ["console=ttyS0"]
image:
  digests: [` + image + `]
  signers: [release]
secrets: [db-password]
`
	pub, err := os.ReadFile(filepath.Join(dir, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(pdir, "web.yaml"), []byte(doc))
	writeFile(t, filepath.Join(pdir, "release.pub"), pub)
	signBlob("policies/web.yaml")
	signBlob("policies/release.pub")

	admin, err := LoadPublicKeyFile(filepath.Join(dir, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := LoadDir(pdir, LoadOptions{RequireSigned: true, AdminKeys: []*Signer{admin}})
	if err != nil {
		t.Fatalf("cosign-signed policy does not load: %v", err)
	}
	if !set.Get("web").Signed {
		t.Fatal("not marked signed")
	}
	ev := Evidence{
		Event: measure.LaunchEvent{Policy: "web", Kernel: digestOf(kernel), Cmdline: "console=ttyS0", Image: image},
		Signatures: []ArtifactSignature{
			{Artifact: "kernel", Signature: kernelSig},
			{Artifact: "image", Signature: imageSig, Payload: payload},
		},
		Time: time.Now(),
	}
	if v := set.Evaluate(context.Background(), ev); !v.Allow {
		t.Fatalf("cosign signatures not accepted: %q", v.Reasons)
	}
	ev.Event.Kernel = digestOf(append(kernel, 0))
	if v := set.Evaluate(context.Background(), ev); v.Allow {
		t.Fatal("cosign kernel signature accepted for other bytes")
	}

	// Editing the signed policy after signing makes it fail to load.
	writeFile(t, filepath.Join(pdir, "web.yaml"), []byte(strings.Replace(doc, "db-password", "all-the-secrets", 1)))
	if _, err := LoadDir(pdir, LoadOptions{RequireSigned: true, AdminKeys: []*Signer{admin}}); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("edited policy loaded: %v", err)
	}
}
