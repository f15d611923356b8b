package launchercmd

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/cosigntest"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/signing"
	"github.com/bulwark-project/bulwark/tpm"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// signCLI runs a launcher command in process with COSIGN_PASSWORD=password
// (unset when password is nil).
func signCLI(t *testing.T, password *string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: func(k string) string {
		if k == passwordEnv && password != nil {
			return *password
		}
		return ""
	}}
	code = Program.Main(context.Background(), env, args)
	return code, out.String(), errb.String()
}

func strp(s string) *string { return &s }

// unsetPassword makes sure the process environment has no COSIGN_PASSWORD
// for this test (restored afterwards).
func unsetPassword(t *testing.T) {
	t.Setenv(passwordEnv, "x")
	os.Unsetenv(passwordEnv)
}

func wantCode(t *testing.T, what string, code, want int, stdout, stderr string, contains ...string) {
	t.Helper()
	if code != want {
		t.Fatalf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", what, code, want, stdout, stderr)
	}
	for _, c := range contains {
		if !strings.Contains(stdout+stderr, c) {
			t.Fatalf("%s: output lacks %q\nstdout: %s\nstderr: %s", what, c, stdout, stderr)
		}
	}
}

func TestKeygenSignVerifyFile(t *testing.T) {
	unsetPassword(t)
	dir := t.TempDir()
	prefix := filepath.Join(dir, "cosign")
	pw := strp("correct horse")

	code, out, errs := signCLI(t, pw, "keygen", "--output-key-prefix", prefix)
	wantCode(t, "keygen", code, 0, out, errs, "Key ID: sha256:")
	fi, err := os.Stat(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("cosign.key mode %v, want 0600", fi.Mode().Perm())
	}
	pub, err := signing.LoadVerifierFile(prefix + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	keyID := signing.KeyID(pub)
	if !strings.Contains(out, keyID) {
		t.Fatalf("keygen printed another key id: %s", out)
	}
	before, _ := os.ReadFile(prefix + ".key")
	code, out, errs = signCLI(t, pw, "keygen", "--output-key-prefix", prefix)
	wantCode(t, "keygen again", code, 1, out, errs, "already exists", "--force")
	if after, _ := os.ReadFile(prefix + ".key"); !bytes.Equal(before, after) {
		t.Fatal("keygen overwrote the key without --force")
	}

	// Only the .pub exists: still refused, and no lone .key is left.
	lone := filepath.Join(dir, "lone")
	os.WriteFile(lone+".pub", []byte("keep me"), 0o644)
	code, out, errs = signCLI(t, pw, "keygen", "--output-key-prefix", lone)
	wantCode(t, "keygen over a .pub", code, 1, out, errs, lone+".pub already exists")
	if fileExists(lone + ".key") {
		t.Fatal("keygen left a private key without its public key")
	}

	// Another key, to check "wrong key".
	otherPrefix := filepath.Join(dir, "other")
	code, out, errs = signCLI(t, pw, "keygen", "--output-key-prefix", otherPrefix)
	wantCode(t, "keygen other", code, 0, out, errs)
	code, out, errs = signCLI(t, pw, "keygen", "--output-key-prefix", otherPrefix, "--force")
	wantCode(t, "keygen --force", code, 0, out, errs)

	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, bytes.Repeat([]byte("bzImage"), 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs = signCLI(t, pw, "sign", "--key", prefix+".key", "--bundle", kernel)
	wantCode(t, "sign", code, 0, out, errs, kernel+".sig", kernel+".bundle.json", keyID)

	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", kernel)
	wantCode(t, "verify", code, 0, out, errs, "Verified OK: "+kernel, keyID, "signature "+kernel+".sig", "bundle "+kernel+".bundle.json")

	// Failures: each names the artifact, the key and the reason.
	code, out, errs = signCLI(t, nil, "verify", "--key", otherPrefix+".pub", kernel)
	wantCode(t, "wrong key", code, 1, out, errs, kernel+": NOT verified", "bad signature")

	tampered := filepath.Join(dir, "vmlinuz.tampered")
	b, _ := os.ReadFile(kernel)
	b[100] ^= 1
	os.WriteFile(tampered, b, 0o644)
	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", "--signature", kernel+".sig", tampered)
	wantCode(t, "tampered", code, 1, out, errs, tampered+": NOT verified with key "+keyID, "bad signature", "modified")
	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", "--bundle", kernel+".bundle.json", tampered)
	wantCode(t, "tampered (bundle)", code, 1, out, errs, "bad signature in bundle")

	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", tampered)
	wantCode(t, "missing signature", code, 1, out, errs, "missing signature", tampered+".sig")

	garbage := filepath.Join(dir, "garbage.sig")
	os.WriteFile(garbage, []byte("this is not base64!\n"), 0o644)
	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", "--signature", garbage, kernel)
	wantCode(t, "garbage signature", code, 1, out, errs, "malformed signature")

	truncated := filepath.Join(dir, "truncated.sig")
	sig, _ := os.ReadFile(kernel + ".sig")
	os.WriteFile(truncated, sig[:len(sig)-8], 0o644)
	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", "--signature", truncated, kernel)
	wantCode(t, "truncated signature", code, 1, out, errs, "NOT verified")

	code, out, errs = signCLI(t, strp("wrong"), "sign", "--key", prefix+".key", kernel)
	wantCode(t, "wrong password", code, 1, out, errs, "wrong password")

	code, out, errs = signCLI(t, nil, "sign", "--key", prefix+".key", kernel)
	wantCode(t, "no password, no terminal", code, 1, out, errs, passwordEnv)

	// Usage errors exit 2.
	for _, args := range [][]string{
		{"sign", kernel},
		{"verify", kernel},
		{"verify", "--key", prefix + ".pub"},
		{"sign", "--key", prefix + ".key", "--image", dir, kernel},
		{"keygen", "--key", prefix + ".key"},
	} {
		code, out, errs = signCLI(t, pw, args...)
		wantCode(t, strings.Join(args, " "), code, 2, out, errs)
	}
}

func TestKeygenEmptyPassword(t *testing.T) {
	t.Setenv(passwordEnv, "") // set, empty: cosign's way to ask for no password
	dir := t.TempDir()
	prefix := filepath.Join(dir, "k")
	code, out, errs := signCLI(t, nil, "keygen", "--output-key-prefix", prefix)
	wantCode(t, "keygen", code, 0, out, errs, "EMPTY password")
	f := filepath.Join(dir, "policy.yaml")
	os.WriteFile(f, []byte("version: 1\n"), 0o644)
	code, out, errs = signCLI(t, nil, "sign", "--key", prefix+".key", f)
	wantCode(t, "sign", code, 0, out, errs)
	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", f)
	wantCode(t, "verify", code, 0, out, errs, "Verified OK")
}

func writeTestLayout(t *testing.T, dir string) {
	t.Helper()
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
}

func TestSignVerifyImage(t *testing.T) {
	unsetPassword(t)
	dir := t.TempDir()
	pw := strp("pw")
	prefix := filepath.Join(dir, "cosign")
	if code, out, errs := signCLI(t, pw, "keygen", "--output-key-prefix", prefix); code != 0 {
		t.Fatal(out, errs)
	}
	imgA, imgB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeTestLayout(t, imgA)
	writeTestLayout(t, imgB)

	code, out, errs := signCLI(t, pw, "sign", "--key", prefix+".key", "--image", imgA+"/", "--ref", "demo/app")
	wantCode(t, "sign image", code, 0, out, errs, imgA+".sig", imgA+".payload.json")
	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", "--image", imgA)
	wantCode(t, "verify image", code, 0, out, errs, "Verified OK: image "+imgA, "claimed reference demo/app")

	// The signature follows the image, not its container format: the same
	// layout as an OCI archive (tar) verifies with the same signature.
	archive := filepath.Join(dir, "a.tar")
	if out, err := exec.Command("tar", "-C", imgA, "-cf", archive, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", "--image", archive, "--signature", imgA+".sig", "--payload", imgA+".payload.json")
	wantCode(t, "verify archive", code, 0, out, errs, "Verified OK: image "+archive)

	// A's signature presented for B: payload digest mismatch.
	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", "--image", imgB, "--signature", imgA+".sig", "--payload", imgA+".payload.json")
	wantCode(t, "other image", code, 1, out, errs, "image "+imgB, "payload digest mismatch")
	// No signature next to B.
	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", "--image", imgB)
	wantCode(t, "unsigned image", code, 1, out, errs, "missing signature", imgB+".sig")

	// A validly signed payload of the wrong type.
	s, err := signing.LoadSigner(prefix+".key", func() ([]byte, error) { return []byte("pw"), nil })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	good, _ := os.ReadFile(imgA + ".payload.json")
	bad := bytes.Replace(good, []byte(signing.SimpleSigningType), []byte("atomic container signature"), 1)
	badSig, err := signing.SignBlob(s, bytes.NewReader(bad))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "bad.payload.json"), bad, 0o644)
	os.WriteFile(filepath.Join(dir, "bad.sig"), badSig, 0o644)
	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", "--image", imgA, "--signature", filepath.Join(dir, "bad.sig"), "--payload", filepath.Join(dir, "bad.payload.json"))
	wantCode(t, "wrong payload type", code, 1, out, errs, "not a cosign image signature payload")

	// Tampered payload (claims B) with A's signature: bad signature.
	os.WriteFile(filepath.Join(dir, "swapped.payload.json"), bytes.Replace(good, []byte("demo/app"), []byte("evil/app"), 1), 0o644)
	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", "--image", imgA, "--payload", filepath.Join(dir, "swapped.payload.json"))
	wantCode(t, "tampered payload", code, 1, out, errs, "bad signature")
}

// cosignBinary finds the cosign CLI (PATH or GOPATH/bin) or skips.
func cosignBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the cosign CLI (external process): not with -short")
	}
	return cosigntest.Binary(t)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// The launcher's files work with cosign, and cosign's with the launcher.
func TestSignVerifyWithCosignCLI(t *testing.T) {
	unsetPassword(t)
	cosign := cosignBinary(t)
	dir := t.TempDir()
	cosignEnv := append(os.Environ(), "HOME="+dir, "TUF_ROOT="+filepath.Join(dir, "tuf"), "COSIGN_PASSWORD=pw")
	runCosign := func(args ...string) error {
		cmd := exec.CommandContext(t.Context(), cosign, args...)
		cmd.Env = cosignEnv
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Logf("cosign %s: %s", strings.Join(args, " "), out)
		}
		return err
	}
	f := filepath.Join(dir, "initrd.img")
	os.WriteFile(f, bytes.Repeat([]byte{0x1f, 0x8b}, 10000), 0o644)

	// launcher keygen + sign → cosign verify-blob
	prefix := filepath.Join(dir, "ours")
	if code, out, errs := signCLI(t, strp("pw"), "keygen", "--output-key-prefix", prefix); code != 0 {
		t.Fatal(out, errs)
	}
	if code, out, errs := signCLI(t, strp("pw"), "sign", "--key", prefix+".key", f); code != 0 {
		t.Fatal(out, errs)
	}
	if err := runCosign("verify-blob", "--key", prefix+".pub", "--signature", f+".sig", "--insecure-ignore-tlog=true", f); err != nil {
		t.Fatalf("cosign rejects launcher sign: %v", err)
	}

	// cosign generate-key-pair + sign-blob → launcher verify
	theirs := filepath.Join(dir, "theirs")
	if err := runCosign("generate-key-pair", "--output-key-prefix", theirs); err != nil {
		t.Fatal(err)
	}
	if err := runCosign("sign-blob", "--key", theirs+".key", "--tlog-upload=false", "--output-signature", f+".cosign.sig", f); err != nil {
		t.Fatal(err)
	}
	code, out, errs := signCLI(t, nil, "verify", "--key", theirs+".pub", "--signature", f+".cosign.sig", f)
	wantCode(t, "launcher verify of cosign's signature", code, 0, out, errs, "Verified OK")
	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", "--signature", f+".cosign.sig", f)
	wantCode(t, "cosign's signature, our key", code, 1, out, errs, "bad signature")
	// launcher sign with cosign's key
	code, out, errs = signCLI(t, strp("pw"), "sign", "--key", theirs+".key", "--output-signature", f+".2.sig", f)
	wantCode(t, "launcher sign with cosign's key", code, 0, out, errs)
	if err := runCosign("verify-blob", "--key", theirs+".pub", "--signature", f+".2.sig", "--insecure-ignore-tlog=true", f); err != nil {
		t.Fatalf("cosign rejects launcher sign with its key: %v", err)
	}
}

// A signing key held in a (managed swtpm) TPM: keygen exports its public
// half, sign uses it, verify checks against the exported key and against
// the TPM directly.
func TestTPMKeySignVerify(t *testing.T) {
	if testing.Short() {
		t.Skip("starts swtpm")
	}
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed: apt-get install swtpm swtpm-tools")
	}
	unsetPassword(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "swtpm")
	t.Cleanup(func() {
		if err := tpm.StopManaged(state); err != nil {
			t.Errorf("stopping swtpm: %v", err)
		}
	})
	keyRef := "tpm:swtpm:" + state
	prefix := filepath.Join(dir, "tpmkey")
	code, out, errs := signCLI(t, nil, "keygen", "--key", keyRef, "--output-key-prefix", prefix)
	wantCode(t, "keygen --key tpm:", code, 0, out, errs, "Key ID: sha256:")
	if fileExists(prefix + ".key") {
		t.Fatal("keygen wrote a private key file for a TPM key")
	}
	record := filepath.Join(dir, "launch.json")
	os.WriteFile(record, []byte(`{"sandbox_id":"0123"}`), 0o644)
	code, out, errs = signCLI(t, nil, "sign", "--key", keyRef, "--bundle", record)
	wantCode(t, "sign with TPM key", code, 0, out, errs)
	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", record)
	wantCode(t, "verify TPM signature", code, 0, out, errs, "Verified OK", "bundle")
	code, out, errs = signCLI(t, nil, "verify", "--key", keyRef, record)
	wantCode(t, "verify against the TPM key", code, 0, out, errs, "Verified OK")
	os.WriteFile(record, []byte(`{"sandbox_id":"4567"}`), 0o644)
	code, out, errs = signCLI(t, nil, "verify", "--key", prefix+".pub", record)
	wantCode(t, "tampered record", code, 1, out, errs, "bad signature")
}

// TestSignVerifyJSON: sign --json and verify --json say the same as their
// text, as one JSON document; a failed verify is {"verified": false} with
// the reason, and exits 1.
func TestSignVerifyJSON(t *testing.T) {
	unsetPassword(t)
	dir := t.TempDir()
	prefix := filepath.Join(dir, "cosign")
	pw := strp("pw")
	if code, out, errs := signCLI(t, pw, "keygen", "--output-key-prefix", prefix); code != 0 {
		t.Fatalf("keygen: %d %s %s", code, out, errs)
	}
	pub, err := signing.LoadVerifierFile(prefix + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	keyID := signing.KeyID(pub)
	file := filepath.Join(dir, "initrd")
	os.WriteFile(file, []byte("an initrd"), 0o644)
	digest := measure.DigestBytes(measure.SHA256, []byte("an initrd"))

	code, out, errs := signCLI(t, pw, "sign", "--json", "--key", prefix+".key", "--bundle", file)
	var sr struct {
		Artifact  string `json:"artifact"`
		Digest    string `json:"digest"`
		KeyID     string `json:"key_id"`
		Signature string `json:"signature"`
		Bundle    string `json:"bundle"`
	}
	if err := json.Unmarshal([]byte(out), &sr); err != nil || code != 0 {
		t.Fatalf("sign --json: exit %d, %v:\n%s%s", code, err, out, errs)
	}
	if sr.Artifact != file || sr.Digest != digest || sr.KeyID != keyID || sr.Signature != file+".sig" || sr.Bundle != file+".bundle.json" {
		t.Fatalf("sign --json: %+v", sr)
	}

	type verifyJSON struct {
		Verified bool     `json:"verified"`
		Artifact string   `json:"artifact"`
		Digest   string   `json:"digest"`
		KeyID    string   `json:"key_id"`
		Sources  []string `json:"sources"`
		Error    string   `json:"error"`
	}
	code, out, errs = signCLI(t, nil, "verify", "--json", "--key", prefix+".pub", file)
	var vr verifyJSON
	if err := json.Unmarshal([]byte(out), &vr); err != nil || code != 0 || !vr.Verified || vr.Digest != digest || vr.KeyID != keyID ||
		strings.Join(vr.Sources, ",") != file+".sig,"+file+".bundle.json" || vr.Error != "" {
		t.Fatalf("verify --json: exit %d, %v, %+v:\n%s%s", code, err, vr, out, errs)
	}
	os.WriteFile(file, []byte("another initrd"), 0o644)
	code, out, errs = signCLI(t, nil, "verify", "--json", "--key", prefix+".pub", file)
	vr = verifyJSON{}
	if err := json.Unmarshal([]byte(out), &vr); err != nil || code != 1 || vr.Verified || !strings.Contains(vr.Error, "NOT verified") {
		t.Fatalf("verify --json of a changed file: exit %d, %v, %+v:\n%s%s", code, err, vr, out, errs)
	}
}
