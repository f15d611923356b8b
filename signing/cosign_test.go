package signing

// Interoperability with the cosign CLI itself, in both directions. These
// tests run cosign as an independent implementation; they skip when it is
// not installed (scripts/install-cosign.sh installs it).

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/cosigntest"
)

// findCosign returns the cosign CLI, or skips (also under -short: it runs
// an external process).
func findCosign(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the cosign CLI (external process): not with -short")
	}
	return cosigntest.Binary(t)
}

type cosignRunner struct {
	t    *testing.T
	bin  string
	home string
}

func newCosign(t *testing.T) *cosignRunner {
	bin := findCosign(t)
	return &cosignRunner{t: t, bin: bin, home: t.TempDir()}
}

// run runs cosign offline-ish: its own HOME and TUF cache, a password in
// COSIGN_PASSWORD. It returns stdout and the error (with stderr in it).
func (c *cosignRunner) run(password string, args ...string) ([]byte, error) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = append(os.Environ(),
		"HOME="+c.home,
		"TUF_ROOT="+filepath.Join(c.home, "tuf"),
		"COSIGN_PASSWORD="+password,
		"COSIGN_YES=true",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.Bytes(), errors.New(strings.TrimSpace(stderr.String()) + ": " + err.Error())
	}
	return stdout.Bytes(), nil
}

func (c *cosignRunner) verifyBlob(pubPath, sigPath, blobPath string) error {
	_, err := c.run("", "verify-blob", "--key", pubPath, "--signature", sigPath, "--insecure-ignore-tlog=true", blobPath)
	return err
}

func writeFile(t *testing.T, path string, b []byte, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func pw(p string) func() ([]byte, error) { return func() ([]byte, error) { return []byte(p), nil } }

func TestCosignVerifiesOurSignatures(t *testing.T) {
	c := newCosign(t)
	dir := t.TempDir()
	privPEM, pubPEM, err := GenerateKeyPair([]byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	keyPath := writeFile(t, filepath.Join(dir, "cosign.key"), privPEM, 0o600)
	pubPath := writeFile(t, filepath.Join(dir, "cosign.pub"), pubPEM, 0o644)
	blob := writeFile(t, filepath.Join(dir, "vmlinuz"), bytes.Repeat([]byte("kernel bytes "), 10000), 0o644)
	tampered := writeFile(t, filepath.Join(dir, "vmlinuz.evil"), bytes.Repeat([]byte("kernel bytez "), 10000), 0o644)

	s, err := LoadSigner(keyPath, pw("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, err := os.Open(blob)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := SignBlob(s, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	sigPath := writeFile(t, SignaturePath(blob), sig, 0o644)

	// our sign → cosign verify-blob
	if err := c.verifyBlob(pubPath, sigPath, blob); err != nil {
		t.Fatalf("cosign rejects our signature: %v", err)
	}
	if err := c.verifyBlob(pubPath, sigPath, tampered); err == nil {
		t.Fatal("cosign accepts our signature over a tampered blob")
	}

	// our keygen → cosign sign-blob with our key → our verify and cosign's
	theirSig := filepath.Join(dir, "vmlinuz.cosign.sig")
	if _, err := c.run("s3cret", "sign-blob", "--key", keyPath, "--tlog-upload=false", "--output-signature", theirSig, blob); err != nil {
		t.Fatalf("cosign cannot sign with our key: %v", err)
	}
	verifyFile(t, s.Public(), blob, theirSig, nil)
	verifyFile(t, s.Public(), tampered, theirSig, ErrBadSignature)
	if _, err := c.run("wrong", "sign-blob", "--key", keyPath, "--tlog-upload=false", "--output-signature", theirSig+".2", blob); err == nil {
		t.Fatal("cosign opened our key with a wrong password")
	}

	// an empty password (allowed, with a warning in the CLI) works both ways
	emptyPriv, emptyPub, err := GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	emptyKey := writeFile(t, filepath.Join(dir, "empty.key"), emptyPriv, 0o600)
	emptySig := filepath.Join(dir, "vmlinuz.empty.sig")
	if _, err := c.run("", "sign-blob", "--key", emptyKey, "--tlog-upload=false", "--output-signature", emptySig, blob); err != nil {
		t.Fatalf("cosign cannot use our empty-password key: %v", err)
	}
	ep, err := LoadVerifier(emptyPub)
	if err != nil {
		t.Fatal(err)
	}
	verifyFile(t, ep, blob, emptySig, nil)

	// our bundle → cosign verify-blob --new-bundle-format (key only, offline)
	bf, _ := os.Open(blob)
	bj, err := SignBundle(s, bf)
	bf.Close()
	if err != nil {
		t.Fatal(err)
	}
	bundlePath := writeFile(t, BundlePath(blob), bj, 0o644)
	trustedRoot := writeFile(t, filepath.Join(dir, "trusted_root.json"), []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`), 0o644)
	verifyBundleArgs := func(b string) []string {
		return []string{"verify-blob", "--key", pubPath, "--bundle", bundlePath, "--new-bundle-format", "--trusted-root", trustedRoot, "--insecure-ignore-tlog=true", b}
	}
	if _, err := c.run("", verifyBundleArgs(blob)...); err != nil {
		t.Fatalf("cosign rejects our bundle: %v", err)
	}
	if _, err := c.run("", verifyBundleArgs(tampered)...); err == nil {
		t.Fatal("cosign accepts our bundle over a tampered blob")
	}

	// our image signature: cosign's own payload generator makes the same
	// payload, and cosign verifies the signature over it.
	payload, isig, err := SignImage(s, digestA, "registry.example/app")
	if err != nil {
		t.Fatal(err)
	}
	generated, err := c.run("", "generate", "registry.example/app@"+digestA)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(generated), payload) {
		t.Fatalf("cosign generate made another payload:\ncosign %s\nours   %s", generated, payload)
	}
	imgSig, imgPayload := ImagePaths(filepath.Join(dir, "image"))
	writeFile(t, imgSig, isig, 0o644)
	writeFile(t, imgPayload, payload, 0o644)
	if err := c.verifyBlob(pubPath, imgSig, imgPayload); err != nil {
		t.Fatalf("cosign rejects our image signature: %v", err)
	}
}

func TestWeVerifyCosignSignatures(t *testing.T) {
	c := newCosign(t)
	dir := t.TempDir()
	// cosign generate-key-pair writes cosign.key/cosign.pub in the cwd.
	cmdDir := filepath.Join(dir, "keys")
	if err := os.Mkdir(cmdDir, 0o700); err != nil {
		t.Fatal(err)
	}
	prefix := filepath.Join(cmdDir, "theirs")
	if _, err := c.run("p4ss", "generate-key-pair", "--output-key-prefix", prefix); err != nil {
		t.Fatalf("cosign generate-key-pair: %v", err)
	}
	keyPath, pubPath := prefix+".key", prefix+".pub"
	pub, err := LoadVerifierFile(pubPath)
	if err != nil {
		t.Fatalf("cannot read cosign's public key: %v", err)
	}
	blob := writeFile(t, filepath.Join(dir, "policy.yaml"), []byte("version: 1\nkernels: []\n"), 0o644)
	tampered := writeFile(t, filepath.Join(dir, "policy.evil.yaml"), []byte("version: 1\nkernels: [any]\n"), 0o644)

	// cosign sign-blob → our verify
	sigPath := SignaturePath(blob)
	if _, err := c.run("p4ss", "sign-blob", "--key", keyPath, "--tlog-upload=false", "--output-signature", sigPath, blob); err != nil {
		t.Fatalf("cosign sign-blob: %v", err)
	}
	verifyFile(t, pub, blob, sigPath, nil)
	verifyFile(t, pub, tampered, sigPath, ErrBadSignature)
	otherPub := newECSigner(t).Public()
	verifyFile(t, otherPub, blob, sigPath, ErrBadSignature)

	// cosign generate-key-pair → our sign with their key → cosign verify
	s, err := LoadSigner(keyPath, pw("p4ss"))
	if err != nil {
		t.Fatalf("cannot load cosign's private key: %v", err)
	}
	defer s.Close()
	if s.KeyID() != KeyID(pub) {
		t.Fatal("cosign's private and public keys differ once loaded")
	}
	if _, err := LoadSigner(keyPath, pw("wrong")); !errors.Is(err, ErrKeyDecrypt) {
		t.Fatalf("wrong password for cosign's key: %v", err)
	}
	f, _ := os.Open(blob)
	sig, err := SignBlob(s, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	ours := writeFile(t, filepath.Join(dir, "policy.ours.sig"), sig, 0o644)
	if err := c.verifyBlob(pubPath, ours, blob); err != nil {
		t.Fatalf("cosign rejects our signature with its key: %v", err)
	}

	// cosign's bundle → our VerifyBundle
	bundlePath := BundlePath(blob)
	if _, err := c.run("p4ss", "sign-blob", "--key", keyPath, "--tlog-upload=false", "--new-bundle-format", "--bundle", bundlePath, blob); err != nil {
		t.Fatalf("cosign sign-blob --bundle: %v", err)
	}
	bj, err := ReadBundleFile(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	verifyBundleFile(t, pub, blob, bj, nil)
	verifyBundleFile(t, pub, tampered, bj, ErrBadSignature)
	verifyBundleFile(t, otherPub, blob, bj, ErrBadSignature)

	// cosign-made image signature (generate + sign-blob) → our VerifyImage
	payload, err := c.run("", "generate", "registry.example/app@"+digestA)
	if err != nil {
		t.Fatal(err)
	}
	imgSig, imgPayload := ImagePaths(filepath.Join(dir, "image"))
	writeFile(t, imgPayload, payload, 0o644)
	if _, err := c.run("p4ss", "sign-blob", "--key", keyPath, "--tlog-upload=false", "--output-signature", imgSig, imgPayload); err != nil {
		t.Fatal(err)
	}
	isig, err := ReadSignatureFile(imgSig)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyImage(pub, payload, isig, digestA); err != nil {
		t.Fatalf("VerifyImage(cosign's): %v", err)
	}
	if err := VerifyImage(pub, payload, isig, digestB); !errors.Is(err, ErrPayloadMismatch) {
		t.Fatalf("cosign's payload for another digest: %v", err)
	}
}

func verifyFile(t *testing.T, pub any, blobPath, sigPath string, want error) {
	t.Helper()
	sig, err := ReadSignatureFile(sigPath)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(blobPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = VerifyBlob(pub, f, sig)
	checkErr(t, filepath.Base(blobPath), err, want)
}

func verifyBundleFile(t *testing.T, pub any, blobPath string, bj []byte, want error) {
	t.Helper()
	f, err := os.Open(blobPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	checkErr(t, filepath.Base(blobPath)+" (bundle)", VerifyBundle(pub, f, bj), want)
}

func checkErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("%s: %v", what, err)
	case want != nil && err == nil:
		t.Fatalf("%s: verified, want %v", what, want)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
}
