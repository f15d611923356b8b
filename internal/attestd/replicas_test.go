package attestd

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/internal/store/pgtest"
	"github.com/bulwark-project/bulwark/token"
	"github.com/bulwark-project/bulwark/tpm"
)

// needSwtpm skips a test when swtpm is not installed.
func needSwtpm(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the attestd binary, swtpm and PostgreSQL (skipped with -short)")
	}
	for _, tool := range []string{"swtpm", "swtpm_setup"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: apt-get install swtpm swtpm-tools", tool)
		}
	}
}

// replicaSet is attestd replicas on one PostgreSQL database, each with
// its own data directory and its own swtpm holding its vault master key.
type replicaSet struct {
	t           *testing.T
	dir, dsn    string
	pol         string
	root, inter string // the host TPM's EK CA
	admin       string // admin certificate directory (alice)
}

func (r *replicaSet) data(name string) string { return filepath.Join(r.dir, name, "data") }
func (r *replicaSet) tpm(name string) string  { return "swtpm:" + filepath.Join(r.dir, name, "swtpm") }

// vaultArgs are the flags naming replica name's store and vault.
func (r *replicaSet) vaultArgs(name string) []string {
	return []string{"--data", r.data(name), "--db", r.dsn, "--vault", "tpm", "--tpm", r.tpm(name)}
}

func (r *replicaSet) start(name string) *daemon {
	r.t.Helper()
	return startDaemon(r.t, append(r.vaultArgs(name), "--policies", r.pol, "--ek-ca", r.root, "--ek-ca", r.inter, "--log-format", "json")...)
}

// serveFails runs `attestd serve` for replica name and expects it to
// refuse to start; it returns what it said.
func (r *replicaSet) serveFails(name string) string {
	r.t.Helper()
	_, errs, code := run(r.t, "", append([]string{"serve", "--listen", "127.0.0.1:0", "--metrics-addr", ""}, append(r.vaultArgs(name), "--policies", r.pol)...)...)
	if code == 0 {
		r.t.Fatalf("replica %s started; want it refused", name)
	}
	return errs
}

// shareIdentity gives replica to the CA and token key of replica from,
// as docs/attestd.md says replicas share them.
func (r *replicaSet) shareIdentity(from, to string) {
	r.t.Helper()
	for _, f := range []string{"tls/ca.crt", "tls/ca.key", token.KeyFile} {
		b, err := os.ReadFile(filepath.Join(r.data(from), f))
		if err != nil {
			r.t.Fatal(err)
		}
		p := filepath.Join(r.data(to), f)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			r.t.Fatal(err)
		}
	}
}

func (r *replicaSet) ctl(d *daemon, cert string, args ...string) (string, string, int) {
	r.t.Helper()
	return run(r.t, "", append([]string{"ctl", "--addr", d.addr, "--ca", filepath.Join(r.admin, "ca.crt"),
		"--cert", cert + ".crt", "--key", cert + ".key"}, args...)...)
}

func newReplicaSet(t *testing.T) *replicaSet {
	dir := t.TempDir()
	r := &replicaSet{t: t, dir: dir, dsn: pgtest.DSN(t), pol: filepath.Join(dir, "policies"), admin: filepath.Join(dir, "admin")}
	os.MkdirAll(r.pol, 0o700)
	os.WriteFile(filepath.Join(r.pol, "test.yaml"), []byte(testPolicyYAML(testPolicyName, testKernel)), 0o600)
	for _, name := range []string{"r1", "r2", "r3", "host"} {
		d := filepath.Join(dir, name, "swtpm")
		t.Cleanup(func() { tpm.StopManaged(d) })
	}
	return r
}

var joinIDRE = regexp.MustCompile(`join request ([0-9a-f]{32}) of replica (\S+) is pending`)

// TestBinaryReplicasJoin: two attestd replicas on one PostgreSQL, each
// with its vault master key sealed to its own swtpm (--vault tpm); the
// second receives the key by the join protocol (attestd replica join,
// approved by an admin with attestd ctl replica approve). Both release;
// kill -9 of either loses nothing: the other keeps releasing, and the
// killed one comes back with its sealed key. A replica that has not
// joined, or whose join is not approved, does not start; a host
// certificate cannot approve a join.
func TestBinaryReplicasJoin(t *testing.T) {
	needSwtpm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := newReplicaSet(t)
	h := newHost(t, r.tpm("host"))
	r.root, r.inter = tpm.ManagedCA(strings.TrimPrefix(r.tpm("host"), "swtpm:"))

	// Replica 1 creates the vault; an admin puts the secrets.
	d1 := r.start("r1")
	if out, errs, code := run(t, "", "admin-cert", "--data", r.data("r1"), "--name", "alice", "-o", r.admin); code != 0 {
		t.Fatalf("admin-cert: %d %s %s", code, out, errs)
	}
	if out, errs, code := run(t, "", "client-cert", "--data", r.data("r1"), "--name", "host1", "-o", filepath.Join(r.dir, "hostcert")); code != 0 {
		t.Fatalf("client-cert: %s %s", out, errs)
	}
	alice, hostCert := filepath.Join(r.admin, "alice"), filepath.Join(r.dir, "hostcert", "host1")
	for name, val := range map[string]string{"db-password": "correct horse battery staple", "api-token": "tok-123"} {
		if out, errs, code := run(t, val, "ctl", "--addr", d1.addr, "--ca", filepath.Join(r.admin, "ca.crt"), "--cert", alice+".crt", "--key", alice+".key", "secret", "put", name); code != 0 {
			t.Fatalf("secret put %s: %d %s %s", name, code, out, errs)
		}
	}

	// Replica 2 shares the CA and token key but has no master key: it
	// refuses to start and says how to join.
	r.shareIdentity("r1", "r2")
	if errs := r.serveFails("r2"); !strings.Contains(errs, "attestd replica join") || !strings.Contains(errs, "no vault master key") {
		t.Fatalf("replica without a key: %s", errs)
	}
	// It asks to join.
	out, errs, code := run(t, "", append([]string{"replica", "join", "--node", "r2"}, r.vaultArgs("r2")...)...)
	m := joinIDRE.FindStringSubmatch(out)
	if code != 0 || m == nil || m[2] != "r2" {
		t.Fatalf("replica join: %d %s %s", code, out, errs)
	}
	id := m[1]
	// Not approved: it still refuses to start, and says so.
	if errs := r.serveFails("r2"); !strings.Contains(errs, "not approved yet") || !strings.Contains(errs, "attestd ctl replica approve "+id) {
		t.Fatalf("unapproved replica: %s", errs)
	}
	// A host certificate, or none, cannot approve it.
	if _, errs, code := r.ctl(d1, hostCert, "replica", "approve", id); code != 1 || !strings.Contains(errs, "PermissionDenied") {
		t.Fatalf("host certificate approving a join: exit %d %s", code, errs)
	}
	if _, errs, code := run(t, "", "ctl", "--addr", d1.addr, "--ca", filepath.Join(r.admin, "ca.crt"), "replica", "approve", id); code != 1 || !strings.Contains(errs, "PermissionDenied") {
		t.Fatalf("no certificate approving a join: exit %d %s", code, errs)
	}
	if errs := r.serveFails("r2"); !strings.Contains(errs, "not approved yet") {
		t.Fatalf("after refused approvals: %s", errs)
	}
	// The admin lists and approves it.
	if out, errs, code := r.ctl(d1, alice, "replica"); code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "pending") {
		t.Fatalf("replica list: %d %s %s", code, out, errs)
	}
	if out, errs, code := r.ctl(d1, alice, "replica", "approve", id); code != 0 || !strings.Contains(out, "approved join "+id) {
		t.Fatalf("replica approve: %d %s %s", code, out, errs)
	}
	// attestd serve finishes the join itself: the key is unwrapped and
	// sealed to replica 2's own swtpm.
	d2 := r.start("r2")
	if !strings.Contains(d2.output(), "replica joined") {
		t.Fatalf("replica 2 did not finish its join:\n%s", d2.output())
	}
	if _, err := os.Stat(filepath.Join(r.data("r2"), "vault", "vault-master.tpmseal")); err != nil {
		t.Fatalf("replica 2's sealed master key: %v", err)
	}

	// The host enrolls on one replica; both release.
	c1, c2 := r.dial(d1), r.dial(d2)
	h.enroll(ctx, c1)
	attestRelease(t, ctx, h, c1)
	attestRelease(t, ctx, h, c2)
	attestRelease(t, ctx, h, c2) // enrolled on 1, attested and released on 2

	// kill -9 of replica 1: replica 2 keeps releasing; replica 1 comes back
	// with its sealed key.
	d1.kill(t)
	attestRelease(t, ctx, h, c2)
	d1 = r.start("r1")
	c1 = r.dial(d1)
	attestRelease(t, ctx, h, c1)
	// kill -9 of replica 2: the same the other way round.
	d2.kill(t)
	attestRelease(t, ctx, h, c1)
	d2 = r.start("r2")
	c2 = r.dial(d2)
	attestRelease(t, ctx, h, c2)
	if out, errs, code := r.ctl(d2, alice, "audit", "verify"); code != 0 || !strings.Contains(out, "audit log OK") {
		t.Fatalf("audit verify: %d %s %s", code, out, errs)
	}
	if out, _, code := r.ctl(d2, alice, "audit", "--all"); code != 0 || !strings.Contains(out, "replica.approve") || !strings.Contains(out, "replica.joined") {
		t.Fatalf("the join is not in the audit log: %d\n%s", code, out)
	}
	for _, d := range []*daemon{d1, d2} {
		if o := d.output(); strings.Contains(o, "correct horse") || strings.Contains(o, "tok-123") {
			t.Fatal("a secret value reached the log")
		}
	}
	d1.stop(t)
	d2.stop(t)
}

// TestBinaryReplicaOwnKeyRefused: a second replica that made a master key
// of its own (as every replica did before joins existed) refuses to start
// once the store's vault is another's — before, it started silently and
// every release failed Internal "wrong master key".
func TestBinaryReplicaOwnKeyRefused(t *testing.T) {
	needSwtpm(t)
	r := newReplicaSet(t)
	r.root, r.inter = filepath.Join(r.dir, "none.pem"), filepath.Join(r.dir, "none.pem")
	os.WriteFile(r.root, nil, 0o600)
	file := func(name string) []string {
		return []string{"--data", r.data(name), "--db", r.dsn, "--vault", "file", "--allow-insecure-file-vault", "--policies", r.pol}
	}
	// Replica 1 made a key of its own (here: as a single attestd on the
	// embedded store); replica 2 made the vault on the shared database.
	d1 := startDaemon(t, "--data", r.data("r1"), "--vault", "file", "--allow-insecure-file-vault", "--policies", r.pol)
	d1.stop(t)
	d2 := startDaemon(t, file("r2")...)
	d2.stop(t)
	// Replica 1, pointed at the shared database, must not start.
	_, errs, code := run(t, "", append([]string{"serve", "--listen", "127.0.0.1:0", "--metrics-addr", ""}, file("r1")...)...)
	if code == 0 || !strings.Contains(errs, "does not open the secrets in the store") || !strings.Contains(errs, "attestd replica join") {
		t.Fatalf("replica with its own key: exit %d\n%s", code, errs)
	}
	// `attestd replica join` says what to do with its own key.
	_, errs, code = run(t, "", append([]string{"replica", "join", "--node", "r1"}, file("r1")[:7]...)...)
	if code == 0 || !strings.Contains(errs, "move that file aside") {
		t.Fatalf("join of a replica with its own key: exit %d\n%s", code, errs)
	}
	// After moving the key aside it joins: offline approval on replica 2.
	key := filepath.Join(r.data("r1"), "vault", "vault-master.key")
	if err := os.Rename(key, key+".orphan"); err != nil {
		t.Fatal(err)
	}
	out, errs, code := run(t, "", append([]string{"replica", "join", "--node", "r1"}, file("r1")[:7]...)...)
	m := joinIDRE.FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("replica join: %d %s %s", code, out, errs)
	}
	if out, errs, code := run(t, "", append([]string{"replica", "approve", "--by", "bob"}, append(file("r2")[:7], m[1])...)...); code != 0 || !strings.Contains(out, "approved join") {
		t.Fatalf("offline approve: %d %s %s", code, out, errs)
	}
	if out, errs, code := run(t, "", append([]string{"replica", "join", "--node", "r1"}, file("r1")[:7]...)...); code != 0 || !strings.Contains(out, "joined") {
		t.Fatalf("finishing the join: %d %s %s", code, out, errs)
	}
	d1 = startDaemon(t, file("r1")...)
	d1.stop(t)
	// The embedded store has no replicas to join.
	_, errs, code = run(t, "", "replica", "join", "--data", r.data("r3"), "--vault", "file", "--allow-insecure-file-vault")
	if code != 2 || !strings.Contains(errs, "embedded store") {
		t.Fatalf("join without --db: exit %d %s", code, errs)
	}
}

func (r *replicaSet) dial(d *daemon) *attestclient.Client {
	r.t.Helper()
	c, err := attestclient.Dial(attestclient.Options{Addr: d.addr, CAFile: filepath.Join(r.admin, "ca.crt")})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

// kill sends SIGKILL and waits for the process to be gone.
func (d *daemon) kill(t *testing.T) {
	t.Helper()
	d.cmd.Process.Kill()
	<-d.exited
}

// attestRelease launches a fresh sandbox on h, attests it through c and
// releases its secrets, which must open in the guest.
func attestRelease(t *testing.T, ctx context.Context, h *host, c *attestclient.Client) {
	t.Helper()
	guest := newGuestKey(t)
	ev := testEvent(t, testPolicyName, guest.PublicKey())
	h.launch(ev)
	nonce, _, err := c.Challenge(ctx, h.nodeID)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Attest(ctx, h.attestRequest(ctx, nonce, ev.SandboxID))
	if err != nil {
		t.Fatal(err)
	}
	if res.GetVerdict() != bulwarkv1.Verdict_VERDICT_ALLOW {
		t.Fatalf("verdict %v: %q", res.GetVerdict(), res.GetReasons())
	}
	rel, err := c.Release(ctx, res.GetAttestationId())
	if err != nil {
		t.Fatalf("release: %v", err)
	}
	if len(rel.GetSecrets()) != 2 {
		t.Fatalf("%d secrets released, want 2", len(rel.GetSecrets()))
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
}
