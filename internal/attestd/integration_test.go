package attestd

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/tpm"
	"google.golang.org/grpc/codes"
)

// TestBinaryEndToEnd starts the real attestd binary and drives it with a
// real TPM on the host side: a managed swtpm whose EK certificate chains
// to swtpm_localca's CA (given to attestd with --ek-ca), over TLS. The
// vault's master key is sealed to another swtpm (--vault=tpm). The admin
// side uses the binary's own admin-cert and ctl commands.
func TestBinaryEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the attestd binary and swtpm (skipped with -short)")
	}
	for _, tool := range []string{"swtpm", "swtpm_setup"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: apt-get install swtpm swtpm-tools", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	tpmDir := filepath.Join(dir, "swtpm")
	t.Cleanup(func() { tpm.StopManaged(tpmDir) })
	h := newHost(t, "swtpm:"+tpmDir)
	if len(h.ekCert) == 0 {
		t.Fatal("managed swtpm has no EK certificate")
	}
	root, inter := tpm.ManagedCA(tpmDir)

	data := filepath.Join(dir, "data")
	pol := filepath.Join(dir, "policies")
	os.MkdirAll(pol, 0o700)
	os.WriteFile(filepath.Join(pol, "test.yaml"), []byte(testPolicyYAML(testPolicyName, testKernel)), 0o600)
	// attestd's own vault master key is sealed to a second (managed) swtpm:
	// the default --vault=tpm.
	vaultTPM := filepath.Join(dir, "vault-swtpm")
	t.Cleanup(func() { tpm.StopManaged(vaultTPM) })
	d := startDaemon(t, "--data", data, "--vault", "tpm", "--tpm", "swtpm:"+vaultTPM, "--policies", pol,
		"--ek-ca", root, "--ek-ca", inter, "--log-format", "json", "--pprof")
	if !strings.Contains(d.output(), "SHA-256 fingerprint") {
		t.Fatalf("no CA fingerprint printed:\n%s", d.output())
	}

	// Admin certificate and secrets through the binary.
	adminDir := filepath.Join(dir, "admin")
	out, errs, code := run(t, "", "admin-cert", "--data", data, "--name", "alice", "-o", adminDir)
	if code != 0 {
		t.Fatalf("admin-cert: %d %s %s", code, out, errs)
	}
	if fi, err := os.Stat(filepath.Join(adminDir, "alice.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin key mode: %v %v", fi.Mode(), err)
	}
	ctl := func(stdin string, args ...string) (string, string, int) {
		return run(t, stdin, append([]string{"ctl", "--addr", d.addr, "--ca", filepath.Join(adminDir, "ca.crt"),
			"--cert", filepath.Join(adminDir, "alice.crt"), "--key", filepath.Join(adminDir, "alice.key")}, args...)...)
	}
	if out, errs, code := ctl("correct horse battery staple", "secret", "put", "db-password"); code != 0 {
		t.Fatalf("secret put: %d %s %s", code, out, errs)
	}
	os.WriteFile(filepath.Join(dir, "tok"), []byte("tok-123"), 0o600)
	if out, errs, code := ctl("", "secret", "put", "api-token", "--from-file", filepath.Join(dir, "tok"), "--description", "API"); code != 0 {
		t.Fatalf("secret put --from-file: %d %s %s", code, out, errs)
	}
	if out, _, code := ctl("", "secret", "list"); code != 0 || !strings.Contains(out, "api-token") || strings.Contains(out, "tok-123") {
		t.Fatalf("secret list: %d\n%s", code, out)
	}

	// Host: enroll with the EK certificate, attest, release, over TLS.
	c, err := attestclient.Dial(attestclient.Options{Addr: d.addr, CAFile: filepath.Join(data, "tls", "ca.crt")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h.enroll(ctx, c)
	guest := newGuestKey(t)
	ev := testEvent(t, testPolicyName, guest.PublicKey())
	h.launch(ev)
	nonce, _, err := c.Challenge(ctx, h.nodeID)
	if err != nil {
		t.Fatal(err)
	}
	req := h.attestRequest(ctx, nonce, ev.SandboxID)
	res, err := c.Attest(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
		t.Fatalf("verdict %v: %q", res.GetVerdict(), res.GetReasons())
	}
	_, err = c.Attest(ctx, req)
	wantCode(t, err, codes.PermissionDenied, "already used")
	rel, err := c.Release(ctx, res.GetAttestationId())
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range rel.GetSecrets() {
		pt, err := guest.Open(ev.SandboxID, w.GetName(), w.GetWrapped())
		if err != nil {
			t.Fatalf("%s: %v", w.GetName(), err)
		}
		if w.GetName() == "db-password" && string(pt) != "correct horse battery staple" {
			t.Fatalf("db-password = %q", pt)
		}
	}
	if len(rel.GetSecrets()) != 2 {
		t.Fatalf("%d secrets released", len(rel.GetSecrets()))
	}
	svcs := strings.Join(listServices(t, ctx, c), " ")
	if !strings.Contains(svcs, "bulwark.v1.Attestation") || !strings.Contains(svcs, "bulwark.v1.Admin") {
		t.Fatalf("reflection: %s", svcs)
	}

	// An EK without a trusted certificate is refused by the binary too.
	_, err = c.Enroll(ctx, h.ekPub, nil, h.akPub)
	wantCode(t, err, codes.PermissionDenied, "ek_certificate")

	// Admin views, and a host certificate refused by the admin API.
	if out, _, code := ctl("", "nodes"); code != 0 || !strings.Contains(out, h.nodeID) || !strings.Contains(out, "allow") {
		t.Fatalf("nodes: %d\n%s", code, out)
	}
	if out, errs, code := ctl("", "audit", "verify"); code != 0 || !strings.Contains(out, "audit log OK") {
		t.Fatalf("audit verify: %d %s %s", code, out, errs)
	}
	if out, _, code := ctl("", "audit", "--all"); code != 0 || !strings.Contains(out, "release") || strings.Contains(out, "correct horse") {
		t.Fatalf("audit: %d\n%s", code, out)
	}
	if out, _, code := ctl("", "policies"); code != 0 || !strings.Contains(out, testPolicyName) {
		t.Fatalf("policies: %d\n%s", code, out)
	}
	if out, errs, code := run(t, "", "client-cert", "--data", data, "--name", "host1", "-o", filepath.Join(dir, "host")); code != 0 {
		t.Fatalf("client-cert: %s %s", out, errs)
	}
	_, errs, code = run(t, "", "ctl", "--addr", d.addr, "--ca", filepath.Join(adminDir, "ca.crt"),
		"--cert", filepath.Join(dir, "host", "host1.crt"), "--key", filepath.Join(dir, "host", "host1.key"), "secret", "list")
	if code != 1 || !strings.Contains(errs, "PermissionDenied") {
		t.Fatalf("host cert on the admin API: exit %d %s", code, errs)
	}
	_, errs, code = run(t, "", "ctl", "--addr", d.addr, "--ca", filepath.Join(adminDir, "ca.crt"), "nodes")
	if code != 1 || !strings.Contains(errs, "PermissionDenied") {
		t.Fatalf("no cert on the admin API: exit %d %s", code, errs)
	}
	if strings.Contains(d.output(), "correct horse") || strings.Contains(d.output(), "tok-123") {
		t.Fatal("a secret value reached the log")
	}
	// The store's group commits are exported, and --pprof serves Go's
	// profiler beside the metrics.
	metrics := httpGet(t, "http://"+d.metrics+"/metrics")
	for _, re := range []string{`(?m)^bulwark_store_commit_writes_count [1-9]`, `(?m)^bulwark_store_commit_seconds_count [1-9]`} {
		if !regexp.MustCompile(re).MatchString(metrics) {
			t.Fatalf("metrics do not match %s", re)
		}
	}
	if !strings.Contains(httpGet(t, "http://"+d.metrics+"/debug/pprof/"), "goroutine") {
		t.Fatal("--pprof: no profile index at /debug/pprof/")
	}

	d.stop(t)
	if !strings.Contains(d.output(), `"vault":"tpm"`) {
		t.Fatalf("vault backend not tpm:\n%s", d.output())
	}
	// Two checkpoints: at start (the empty log) and after ctl audit verify.
	if out, errs, code := run(t, "", "audit", "verify", "--data", data); code != 0 || !strings.Contains(out, "audit log OK") || !strings.Contains(out, "2 signed checkpoints") {
		t.Fatalf("offline audit verify: %d %s %s", code, out, errs)
	}
}

// TestBinaryInsecure: --insecure serves plaintext with a loud warning and
// no admin API.
func TestBinaryInsecure(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the attestd binary (skipped with -short)")
	}
	dir := t.TempDir()
	d := startDaemon(t, "--data", dir, "--vault", "file", "--allow-insecure-file-vault", "--insecure")
	if !strings.Contains(d.output(), "WARNING: --insecure") {
		t.Fatalf("no warning:\n%s", d.output())
	}
	if _, err := os.Stat(filepath.Join(dir, "tls", "ca.key")); err == nil {
		t.Fatal("--insecure created TLS material")
	}
	c, err := attestclient.Dial(attestclient.Options{Addr: d.addr, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	_, err = c.Admin.ListNodes(ctx, &bulwarkv1.ListNodesRequest{})
	wantCode(t, err, codes.PermissionDenied, "disabled")
	if _, err := c.SigningKeys(ctx); err != nil {
		t.Fatal(err)
	}
	// Without --pprof there is no profiler.
	resp, err := http.Get("http://" + d.metrics + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/debug/pprof/ without --pprof: %s, want 404", resp.Status)
	}
	// SIGHUP reloads the policies; it does not end the process (its
	// default action) and the server keeps answering.
	d.cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(d.output(), "policies reloaded on SIGHUP"); {
		select {
		case err := <-d.exited:
			t.Fatalf("attestd exited on SIGHUP: %v\n%s", err, d.output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged after SIGHUP:\n%s", d.output())
		}
	}
	if _, err := c.SigningKeys(ctx); err != nil {
		t.Fatalf("after SIGHUP: %v", err)
	}
	d.stop(t)
}

// TestBinaryRefusesBadFlags: the file vault needs its explicit flag, and
// --data is required.
func TestBinaryRefusesBadFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the attestd binary (skipped with -short)")
	}
	dir := t.TempDir()
	_, errs, code := run(t, "", "serve", "--data", dir, "--vault", "file")
	if code == 0 || !strings.Contains(errs, "--allow-insecure-file-vault") {
		t.Fatalf("file vault without its flag: %d %s", code, errs)
	}
	_, errs, code = run(t, "", "serve")
	if code != 2 || !strings.Contains(errs, "--data") {
		t.Fatalf("no --data: %d %s", code, errs)
	}
	_, errs, code = run(t, "", "serve", "--data", dir, "--pprof", "--metrics-addr", "")
	if code != 2 || !strings.Contains(errs, "--pprof serves on --metrics-addr") {
		t.Fatalf("--pprof without a metrics address: %d %s", code, errs)
	}
	for _, cmd := range [][]string{{"serve", "--help"}, {"admin-cert", "--help"}, {"client-cert", "--help"}, {"audit", "verify", "--help"}, {"ctl", "--help"}} {
		out, errs, code := run(t, "", cmd...)
		if code != 0 || !strings.Contains(out, "Usage: attestd") || errs != "" {
			t.Fatalf("%v: exit %d, want the usage on stdout and nothing on stderr:\n%s\n--- stderr:\n%s", cmd, code, out, errs)
		}
	}
}
