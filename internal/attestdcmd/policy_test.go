package attestdcmd

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/bulwark-project/bulwark/internal/cli"
)

func runPolicyCheckCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	env := &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: func(string) string { return "" }}
	code := Program.Main(context.Background(), env, append([]string{"policy", "check"}, args...))
	return code, out.String(), errb.String()
}

func TestPolicyCheckDir(t *testing.T) {
	code, stdout, stderr := runPolicyCheckCmd(t, "../../docs/examples/policies")
	if code != 0 || !strings.Contains(stdout, "3 policies ok") || !strings.Contains(stdout, "web.yaml: ok: web:") {
		t.Fatalf("examples: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runPolicyCheckCmd(t, "--json", "../../docs/examples/policies")
	var rep struct {
		OK       bool `json:"ok"`
		Policies []struct {
			Name string `json:"name"`
		} `json:"policies"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != 0 || !rep.OK || len(rep.Policies) != 3 {
		t.Fatalf("examples --json: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}

	dir := t.TempDir()
	doc := []byte("apiVersion: bulwark.dev/v1\nname: a\nkernel: {digests: []}\ncmdline: {exact: []}\n")
	os.WriteFile(filepath.Join(dir, "a.yaml"), doc, 0o644)
	os.WriteFile(filepath.Join(dir, "b.yaml"), []byte("apiVersion: bulwark.dev/v1\nname: a\nkernel: {digests: [sha256:00]}\ncmdline: {exact: []}\nextra: 1\n"), 0o644)
	code, stdout, stderr = runPolicyCheckCmd(t, dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, stdout, stderr)
	}
	b := filepath.Join(dir, "b.yaml")
	for _, want := range []string{b + ":3:20: kernel.digests: malformed digest", b + `:5:1: policy: unknown field "extra"`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "2 problem(s) in 1 of 2 file(s); attestd would keep its previous policies") {
		t.Errorf("stderr: %s", stderr)
	}

	// Signed policies.
	os.Remove(b)
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	keyFile := filepath.Join(t.TempDir(), "admin.pub")
	os.WriteFile(keyFile, pub, 0o644)
	code, stdout, _ = runPolicyCheckCmd(t, "--require-signed-policies", "--policy-key", keyFile, dir)
	if code != 1 || !strings.Contains(stdout, "no signature file") {
		t.Fatalf("unsigned accepted: exit %d\n%s", code, stdout)
	}
	sum := sha256.Sum256(doc)
	sig, _ := ecdsa.SignASN1(rand.Reader, priv, sum[:])
	os.WriteFile(filepath.Join(dir, "a.yaml.sig"), []byte(base64.StdEncoding.EncodeToString(sig)), 0o644)
	code, stdout, stderr = runPolicyCheckCmd(t, "--require-signed-policies", "--policy-key", keyFile, dir)
	if code != 0 || !strings.Contains(stdout, "signature verified") || !strings.Contains(stdout, "warning: kernel.digests is empty: this policy allows no kernel") {
		t.Fatalf("signed: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, _ := runPolicyCheckCmd(t, "--require-signed-policies", dir); code != 2 {
		t.Errorf("--require-signed-policies without keys: exit %d, want 2", code)
	}
	if code, _, stderr := runPolicyCheckCmd(t, t.TempDir()); code != 1 || !strings.Contains(stderr, "no *.yaml") {
		t.Errorf("empty dir: exit %d %s", code, stderr)
	}
}
