package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/bulwark-project/bulwark/internal/cosigntest"
)

// TestContainerdRegistrySignatures: an image containerd pulled from a
// registry, signed there by 'cosign sign', runs through the shim with no
// signature annotation: the shim finds the signature in the registry
// (listed in BULWARK_SIGNATURE_REGISTRIES), and the launch verifies it
// against the digest it measured from containerd's content store. An
// unsigned image from the same registry is refused with the policy's
// reasons, and nothing of it runs.
func TestContainerdRegistrySignatures(t *testing.T) {
	needContainerd(t, false)
	cosign := cosigntest.Binary(t)
	e := setup(t)
	buildShim(t)

	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	push := func(layoutDir, repo string) string { return pushLayout(t, host, layoutDir, repo, "1") }
	build := func(dir, ref, script string) {
		e.must("launcher", "image", "build", "-o", e.path(dir), "--ref", ref, "--busybox", "sh,echo,ls,sha256sum,cut",
			"--entrypoint", "/bin/sh", "--cmd", "-c", "--cmd", script)
		e.must("launcher", "policy", "init", "--kernel", e.path("vmlinux"), "--initrd", e.path("base.cpio"),
			"--image", e.path(dir), "--signer", e.path("cosign.pub"), "--secret", "db", "--name", dir,
			"-o", e.path("attestd/policies/"+dir+".yaml"))
	}
	build("reg-signed", "local/signed:1", `echo "fingerprint $(sha256sum /run/secrets/db | cut -d' ' -f1)"; exit 7`)
	build("reg-unsigned", "local/unsigned:1", `echo "unsigned ran"; exit 0`)
	e.must("attestd", append(append([]string{"ctl"}, e.admin...), "policies", "reload")...)
	signed := push(e.path("reg-signed"), "signed")
	push(e.path("reg-unsigned"), "unsigned")
	sign := exec.Command(cosign, "sign", "--key", e.path("cosign.key"), "--tlog-upload=false", "--allow-http-registry", "-y", signed)
	sign.Env = append(os.Environ(), "COSIGN_PASSWORD=e2e-password", "HOME="+t.TempDir())
	if out, err := sign.CombinedOutput(); err != nil {
		t.Fatalf("cosign sign: %v\n%s", err, out)
	}

	e.startDaemon(t)
	cd := e.startContainerdIn(t, e.path("containerd-registry"), false, "BULWARK_SIGNATURE_REGISTRIES=http://"+host)
	for _, repo := range []string{"signed", "unsigned"} {
		if out, err := cd.ctr("images", "pull", "--plain-http", host+"/"+repo+":1").CombinedOutput(); err != nil {
			t.Fatalf("ctr images pull: %v\n%s", err, out)
		}
	}
	run := func(repo string) (string, string, int) {
		c := cd.ctr("run", "--rm", "--runtime", "io.containerd.bulwark.v2",
			"--annotation", "bulwark.dev/policy=reg-"+repo,
			"--annotation", "bulwark.dev/kernel="+e.path("vmlinux"),
			"--annotation", "bulwark.dev/initrd="+e.path("base.cpio"),
			"--annotation", "bulwark.dev/template=none",
			host+"/"+repo+":1", "reg-"+repo)
		var so, se bytes.Buffer
		c.Stdout, c.Stderr = &so, &se
		err := c.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return so.String(), se.String(), code
	}

	so, se, code := run("signed")
	sum := sha256.Sum256(e.secret)
	if want := "fingerprint " + hex.EncodeToString(sum[:]); code != 7 || !strings.Contains(so, want) {
		t.Fatalf("the registry-signed image: exit %d, want 7 and %q\nstdout:\n%s\nstderr:\n%s\ncontainerd:\n%s", code, want, so, se, cd.log.String())
	}
	if !strings.Contains(cd.log.String(), "1 cosign signature(s) from the registry of "+host+"/signed:1") {
		t.Errorf("the shim did not say where the signature came from:\n%s", cd.log.String())
	}

	so, se, code = run("unsigned")
	if code == 0 || !strings.Contains(se, `policy "reg-unsigned" does not allow it`) || strings.Contains(so, "unsigned ran") {
		t.Fatalf("the unsigned image: exit %d, want a refusal with the policy's reasons\nstdout:\n%s\nstderr:\n%s", code, so, se)
	}
	if left := e.ps(t, true); len(left) != 0 {
		t.Errorf("the host service still lists %d sandboxes: %+v", len(left), left)
	}
}
