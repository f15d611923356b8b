package launchercmd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/attestdtest"
	"github.com/bulwark-project/bulwark/tpm"
)

// launcher enroll against a real attestd says what is wrong and what to
// do when the connection or the EK is refused: --insecure against a TLS
// attestd used to print "error reading server preface: EOF", and an EK
// attestd does not trust gave neither the node id nor the flags of attestd
// serve that admit it.
func TestEnrollExplainsRefusals(t *testing.T) {
	otherCA := filepath.Join(t.TempDir(), "other-ek-ca.pem")
	if err := os.WriteFile(otherCA, selfSignedCA(t, "some other EK CA"), 0o600); err != nil {
		t.Fatal(err)
	}
	nodeID := regexp.MustCompile(`node sha256:[0-9a-f]{64}`)
	cases := []struct {
		name    string
		serve   []string // extra flags of attestd serve
		tpm     string   // "swtpm": a managed swtpm with an EK certificate (slow)
		insec   bool
		want    []string
		node    bool // the node id is named
		notWant []string
	}{
		{name: "plaintext to TLS", tpm: "sim", insec: true,
			want: []string{"speaks TLS", "drop --insecure and give --ca"}, notWant: []string{"server preface"}},
		{name: "no EK certificate", tpm: "sim", node: true,
			want: []string{"launcher enroll: attestd enroll: ek_certificate: missing (this TPM has no EK certificate)", "attestd serve --ek-allow", "(PermissionDenied)"}},
		{name: "EK certificate and no EK CA", tpm: "swtpm", node: true,
			want: []string{"attestd trusts no EK CA", "attestd serve with --ek-ca FILE", "--ek-allow file"}},
		{name: "EK certificate from another CA", tpm: "swtpm", serve: []string{"--ek-ca", otherCA}, node: true,
			want: []string{"ek_certificate of node sha256:", "attestd serve --ek-ca FILE", "--ek-allow file"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := c.tpm
			if spec == "swtpm" {
				if testing.Short() {
					t.Skip("starts swtpm")
				}
				if _, err := exec.LookPath("swtpm_setup"); err != nil {
					t.Skip("swtpm_setup is not installed (apt-get install swtpm-tools)")
				}
				dir := t.TempDir()
				spec = "swtpm:" + dir
				t.Cleanup(func() {
					if err := tpm.StopManaged(dir); err != nil {
						t.Errorf("stopping swtpm: %v", err)
					}
				})
			}
			srv := attestdtest.Start(t, c.serve...)
			args := []string{"enroll", "--tpm", spec, "--attestd", srv.Addr}
			if c.insec {
				args = append(args, "--insecure")
			} else {
				args = append(args, "--ca", srv.CA(), "--server-name", "localhost")
			}
			_, stderr, code := runLauncher(t, map[string]string{"BULWARK_STATE": filepath.Join(t.TempDir(), "state")}, args...)
			if code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", code, stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			for _, w := range append(c.notWant, "rpc error:", "desc =") {
				if strings.Contains(stderr, w) {
					t.Errorf("stderr has %q:\n%s", w, stderr)
				}
			}
			if c.node && !nodeID.MatchString(stderr) {
				t.Errorf("stderr does not name the node id:\n%s", stderr)
			}
		})
	}
}

// selfSignedCA returns a throwaway CA certificate (PEM).
func selfSignedCA(t *testing.T, cn string) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
