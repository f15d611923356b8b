package launchercmd

import (
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/bulwark-project/bulwark/internal/imagetest"
	"github.com/bulwark-project/bulwark/signing"
)

// TestDockerArchiveRegistrySignature: a Docker-media-type image pushed to a
// registry (on loopback) and signed there by the real 'cosign sign' is
// saved as a docker archive — by 'crane pull' (gzip layers as in the
// registry) or `docker save` (layers uncompressed) — and the registry's
// signature, fetched by 'launcher image pull', verifies against the saved
// copy through 'launcher verify' and 'launcher run' (which gets past the
// signature check to the TPM). When the registry's layers were compressed
// by another tool, the digest cannot be recovered from a `docker save`
// archive, and both commands say so and what to do.
func TestDockerArchiveRegistrySignature(t *testing.T) {
	unsetPassword(t)
	reg := newLoopbackRegistry(t)
	dir := t.TempDir()
	pw := strp("pw")
	if code, out, errs := signCLI(t, pw, "keygen", "--output-key-prefix", filepath.Join(dir, "cosign")); code != 0 {
		t.Fatalf("keygen: %s%s", out, errs)
	}
	key, pub := filepath.Join(dir, "cosign.key"), filepath.Join(dir, "cosign.pub")

	img, err := random.Image(64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigFile()
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	// Pushed as 'crane push' pushes it, and the same content with its layers
	// compressed otherwise, as 'docker push' would.
	craneRef, craneDigest := reg.pushImage("app", "crane", img)
	dockerRef, dockerDigest := reg.pushImage("app", "docker", imagetest.Recompressed(t, img, gzip.BestCompression))
	if craneDigest == dockerDigest {
		t.Fatal("both pushes have the same digest")
	}
	cosignSign(t, key, *pw, craneRef)
	cosignSign(t, key, *pw, dockerRef)
	// The registry's signatures, as 'launcher image pull' keeps them.
	sidecars := func(ref string) (sig, payload []byte) {
		out := filepath.Join(t.TempDir(), "pulled")
		if so, se, code := runLauncher(t, nil, "image", "pull", "--allow-http-registry", "-o", out, "--signer", pub, ref); code != 0 {
			t.Fatalf("pull %s: exit %d\n%s%s", ref, code, so, se)
		}
		s, p := signing.ImagePaths(out)
		sig, _ = os.ReadFile(s)
		payload, _ = os.ReadFile(p)
		return sig, payload
	}
	craneSig, cranePayload := sidecars(craneRef)
	dockerSig, dockerPayload := sidecars(dockerRef)

	archive := func(file string, saved bool, sig, payload []byte) string {
		p := filepath.Join(dir, file)
		if saved {
			imagetest.WriteDockerSave(t, img, p)
		} else {
			tag, _ := name.NewTag("example.com/app:1")
			if err := tarball.WriteToFile(p, tag, img); err != nil {
				t.Fatal(err)
			}
		}
		s, pl := signing.ImagePaths(p)
		os.WriteFile(s, sig, 0o644)
		os.WriteFile(pl, payload, 0o644)
		return p
	}

	// The kernel and initrd 'launcher run' needs, signed by the same key.
	kernel, initrd := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "base.cpio")
	for _, f := range []string{kernel, initrd} {
		os.WriteFile(f, []byte("stand-in for "+filepath.Base(f)), 0o644)
		if code, out, errs := signCLI(t, pw, "sign", "--key", key, f); code != 0 {
			t.Fatalf("sign %s: %s%s", f, out, errs)
		}
	}
	run := func(image string) (string, int) {
		env := map[string]string{"BULWARK_STATE": filepath.Join(t.TempDir(), "state")}
		_, stderr, code := runLauncher(t, env, "run", "--attestd", "127.0.0.1:1", "--insecure", "--policy", "p", "--accel", "tcg",
			"--kernel", kernel, "--initrd", initrd, "--image", image, "--signer", pub, "--tpm", filepath.Join(dir, "no-tpm-here"))
		return stderr, code
	}

	for _, tc := range []struct {
		name    string
		saved   bool
		sig     []byte
		payload []byte
		ok      bool
		want    string // in the refusal
	}{
		{"crane pull archive, registry signature", false, craneSig, cranePayload, true, ""},
		{"docker save archive, pushed by crane", true, craneSig, cranePayload, true, ""},
		{"docker save archive, pushed with other compression", true, dockerSig, dockerPayload, false, "compressed otherwise"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := archive(strings.ReplaceAll(tc.name, " ", "_")+".tar", tc.saved, tc.sig, tc.payload)
			so, se, code := runLauncher(t, nil, "verify", "--key", pub, "--image", p)
			stderr, runCode := run(p)
			if tc.ok {
				if code != 0 || !strings.Contains(so, "Verified OK") || !strings.Contains(so, craneDigest.String()) {
					t.Fatalf("verify: exit %d\n%s%s", code, so, se)
				}
				// run verified the signatures and went on to the host TPM.
				if runCode != ExitLaunchFailed || !strings.Contains(stderr, "host TPM") || strings.Contains(stderr, "signature") {
					t.Fatalf("run: exit %d\n%s", runCode, stderr)
				}
				return
			}
			t.Logf("verify:\n%s%s\nrun:\n%s", so, se, stderr)
			for _, out := range []string{so + se, stderr} {
				if !strings.Contains(out, tc.want) || !strings.Contains(out, "launcher image pull -o DIR") || !strings.Contains(out, "cosign save") {
					t.Fatalf("verify exit %d, run exit %d; want %q and what to do in:\n%s", code, runCode, tc.want, out)
				}
			}
			if code != 1 || !strings.Contains(so+se, "NOT verified") || runCode != ExitLaunchFailed || !strings.Contains(stderr, "signature") {
				t.Fatalf("verify exit %d, run exit %d:\n%s%s\n%s", code, runCode, so, se, stderr)
			}
		})
	}
}
