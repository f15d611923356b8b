package launchercmd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/bulwark-project/bulwark/kvm"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/policy"
)

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// TestPolicyInitAllowsExactlyTheArtifacts writes a reference policy from
// real files and an OCI layout, checks it with 'policy check', and judges
// launches of those (and other) artifacts against it. The expected digests
// are computed independently of package measure.
func TestPolicyInitAllowsExactlyTheArtifacts(t *testing.T) {
	dir := t.TempDir()
	kernel, initrd := make([]byte, 1<<20+3), make([]byte, 5000)
	rand.Read(kernel)
	rand.Read(initrd)
	kpath, ipath := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd.cpio")
	os.WriteFile(kpath, kernel, 0o644)
	os.WriteFile(ipath, initrd, 0o644)
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	lp, err := layout.Write(filepath.Join(dir, "img"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	imgDigest, _ := img.Digest()
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	os.WriteFile(filepath.Join(dir, "release.pub"), pub, 0o644)
	out := filepath.Join(dir, "web.yaml")
	cmdline := "console=ttyS0 panic=-1"

	stdout, stderr, code := runLauncher(t, nil, "policy", "init", "--kernel", kpath, "--initrd", ipath, "--cmdline", cmdline,
		"--image", filepath.Join(dir, "img"), "--signer", filepath.Join(dir, "release.pub"), "--secret", "db-password", "-o", out)
	if code != 0 {
		t.Fatalf("policy init: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, _, code := runLauncher(t, nil, "policy", "init", "--kernel", kpath, "-o", out); code == 0 {
		t.Fatal("policy init overwrote an existing file without --force")
	}
	// A command line the guest kernel would split differently is not written into a policy.
	if _, stderr, code := runLauncher(t, nil, "policy", "init", "--kernel", kpath, "--cmdline", "console=ttyS0\u00a0init=/bin/sh"); code == 0 ||
		!strings.Contains(stderr, `cmdline.exact[0]: kernel command line byte 13 is "\xc2"`) {
		t.Fatalf("policy init --cmdline with a no-break space: exit %d, %s", code, stderr)
	}
	stdout, stderr, code = runLauncher(t, nil, "policy", "check", out)
	if code != 0 || !strings.Contains(stdout, "web.yaml: ok: web: kernel 1 digest + signed by release") {
		t.Fatalf("policy check: exit %d\n%s%s", code, stdout, stderr)
	}
	p, err := policy.ParseFile(out, policy.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	set, _ := policy.NewSet(p)
	sign := func(b []byte) []byte {
		s := sha256.Sum256(b)
		sig, _ := ecdsa.SignASN1(rand.Reader, priv, s[:])
		return sig
	}
	payload := []byte(`{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"` + imgDigest.String() + `"},"type":"cosign container image signature"},"optional":null}`)
	ev := policy.Evidence{
		Event: measure.LaunchEvent{Policy: "web", Kernel: sha256Hex(kernel), Initrd: sha256Hex(initrd), Cmdline: cmdline, Image: imgDigest.String()},
		Signatures: []policy.ArtifactSignature{
			{Artifact: "kernel", Signature: sign(kernel)},
			{Artifact: "initrd", Signature: sign(initrd)},
			{Artifact: "image", Signature: sign(payload), Payload: payload},
		},
		Time: time.Now(),
	}
	if v := set.Evaluate(context.Background(), ev); !v.Allow || strings.Join(v.Secrets, ",") != "db-password" {
		t.Fatalf("reference policy denies its own artifacts: %q\n", v.Reasons)
	}
	other := ev
	other.Event.Kernel = sha256Hex(append(kernel, 0))
	if v := set.Evaluate(context.Background(), other); v.Allow {
		t.Fatal("reference policy allows another kernel")
	}
	other = ev
	other.Event.Cmdline = cmdline + " init=/bin/sh"
	if v := set.Evaluate(context.Background(), other); v.Allow {
		t.Fatal("reference policy allows another command line")
	}
}

func TestPolicyCheckReportsEveryError(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`apiVersion: bulwark.dev/v1
name: bad
kernel:
  digests: [sha256:1234]
  signers: [ghost]
cmdline:
  exact: ["x"]
rules:
  - {name: r, expr: "nodeid == 1"}
colour: blue
`), 0o644)
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("apiVersion: bulwark.dev/v1\nname: good\nkernel: {digests: []}\ncmdline: {exact: []}\n"), 0o644)
	stdout, stderr, code := runLauncher(t, nil, "policy", "check", good, bad)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{bad + ":4:13: kernel.digests: malformed digest", bad + ":5:13: kernel.signers: unknown signer \"ghost\"",
		bad + ":9:22: rules[0].expr: CEL: undeclared reference to 'nodeid'", bad + `:10:1: policy: unknown field "colour"`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "4 problem(s) in 1 of 2 file(s)") {
		t.Errorf("stderr: %s", stderr)
	}
	// --json: the same findings as one document.
	stdout, _, code = runLauncher(t, nil, "policy", "check", "--json", good, bad)
	var rep struct {
		OK       bool `json:"ok"`
		Problems []struct {
			File    string `json:"file"`
			Line    int    `json:"line"`
			Column  int    `json:"column"`
			Message string `json:"message"`
		} `json:"problems"`
		Policies []any `json:"policies"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || code != 1 || rep.OK || len(rep.Problems) != 4 || rep.Policies == nil || len(rep.Policies) != 0 {
		t.Fatalf("--json: exit %d, %v, %+v\n%s", code, err, rep, stdout)
	}
	if p := rep.Problems[0]; p.File != bad || p.Line != 4 || p.Column != 13 || !strings.HasPrefix(p.Message, "kernel.digests: malformed digest") {
		t.Errorf("--json first problem %+v", p)
	}
	stdout, _, code = runLauncher(t, nil, "policy", "check", "--json", good)
	var okRep struct {
		OK       bool `json:"ok"`
		Policies []struct {
			Name, File, Digest string
		} `json:"policies"`
	}
	if err := json.Unmarshal([]byte(stdout), &okRep); err != nil || code != 0 || !okRep.OK || len(okRep.Policies) != 1 || okRep.Policies[0].Name != "good" || !strings.HasPrefix(okRep.Policies[0].Digest, "sha256:") {
		t.Fatalf("--json of a good policy: exit %d, %v, %+v\n%s", code, err, okRep, stdout)
	}
	if _, _, code := runLauncher(t, nil, "policy", "check"); code != 2 {
		t.Errorf("no files: exit %d, want 2", code)
	}
	if _, _, code := runLauncher(t, nil, "policy", "init"); code != 2 {
		t.Errorf("init without --kernel: exit %d, want 2", code)
	}
	if help, _, code := runLauncher(t, nil, "policy", "check", "--help"); code != 0 || !strings.Contains(help, "--policy-key PUB") {
		t.Errorf("--help: exit %d, usage %q", code, help)
	}
}

// TestDefaultCmdlineParamsMatchKVM keeps the reference policy's default command-line parameters in step
// with the command lines the launcher really uses.
func TestDefaultCmdlineParamsMatchKVM(t *testing.T) {
	doc, err := policy.Reference(policy.ReferenceValues{Name: "d", Kernel: sha256Hex([]byte("k"))})
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse("d.yaml", doc, policy.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	set, _ := policy.NewSet(p)
	for _, accel := range []string{kvm.AccelKVM, kvm.AccelTCG} {
		c, err := kvm.DefaultCmdline(accel)
		if err != nil {
			t.Skipf("kvm.DefaultCmdline(%s): %v", accel, err)
		}
		ev := policy.Evidence{Event: measure.LaunchEvent{Policy: "d", Kernel: sha256Hex([]byte("k")), Cmdline: c}}
		if v := set.Evaluate(context.Background(), ev); !v.Allow {
			t.Errorf("default %s command line %q is not allowed by the default params rule: %q", accel, c, v.Reasons)
		}
	}
}

// TestPolicyInitHostDefaults measures the host kernel (extracted vmlinux),
// the base initramfs and the default command lines, as 'launcher run' uses
// them by default, and compares with independently computed values.
func TestPolicyInitHostDefaults(t *testing.T) {
	if testing.Short() {
		t.Skip("extracts the host kernel (slow); skipped with -short")
	}
	hk, err := kvm.FindHostKernel()
	if err != nil {
		t.Skipf("no host kernel: %v (apt-get install linux-image-amd64)", err)
	}
	t.Setenv("BULWARK_STATE", t.TempDir())
	// Any static ELF executable stands in for the agent: only its bytes matter here.
	agent := "/bin/busybox"
	if _, err := os.Stat(agent); err != nil {
		t.Skip("no static executable to stand in for the agent: apt-get install busybox-static")
	}
	stdout, stderr, code := runLauncher(t, nil, "policy", "init", "--host-defaults", "--agent", agent, "--name", "hd")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	p, err := policy.Parse("hd.yaml", []byte(stdout), policy.LoadOptions{})
	if err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	vmlinuxPath, err := kvm.DefaultKernel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	vmlinux, _ := os.ReadFile(vmlinuxPath)
	agentBytes, _ := os.ReadFile(agent)
	initrd, err := kvm.BuildBaseInitramfs(kvm.BaseOptions{Agent: agentBytes, KernelVersion: hk.Version})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Kernel.Digests, sha256Hex(vmlinux); len(got) != 1 || got[0] != want {
		t.Errorf("kernel digests %v, want [%s]", got, want)
	}
	if got, want := p.Initrd.Digests, sha256Hex(initrd); len(got) != 1 || got[0] != want {
		t.Errorf("initrd digests %v, want [%s]", got, want)
	}
	kc, _ := kvm.DefaultCmdline(kvm.AccelKVM)
	tc, _ := kvm.DefaultCmdline(kvm.AccelTCG)
	if got := p.Cmdline.Exact; len(got) != 2 || got[0] != kc || got[1] != tc {
		t.Errorf("cmdlines %q, want %q and %q", got, kc, tc)
	}
}
