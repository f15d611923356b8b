// Package pki is attestd's own certificate authority: created on first
// start in DATA/tls, it issues the server certificate and the admin and host
// client certificates, whose role is a URI SAN (HasRole).
package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bulwark-project/bulwark/internal/fsutil"
)

// Files written under the data directory's tls/ folder on first start.
const (
	caCertFile     = "ca.crt"
	caKeyFile      = "ca.key"
	serverCertFile = "server.crt"
	serverKeyFile  = "server.key"
)

// AdminRoleURI is the URI SAN that marks a client certificate as an admin's.
// A client certificate reaches the Admin service only when it chains to
// attestd's CA AND carries this URI.
const AdminRoleURI = "bulwark:role:admin"

// HostRoleURI marks a client certificate issued for a launcher host
// (optional: the Attestation service does not require client certificates).
const HostRoleURI = "bulwark:role:host"

// CA is attestd's own certificate authority: it signs the server
// certificate and the admin (and optional host) client certificates.
// It is created on first start in DIR/tls with 0600 keys.
type CA struct {
	Dir    string
	CACert *x509.Certificate
	CAKey  *ecdsa.PrivateKey
	// Now and Rand default to time.Now and crypto/rand.
	Now  func() time.Time
	Rand io.Reader
}

// CAFingerprint is the SHA-256 of the CA certificate (DER), hex, the value
// clients pin or compare out of band.
func (p *CA) CAFingerprint() string { return CertFingerprint(p.CACert) }

// CertFingerprint returns the hex SHA-256 of a certificate's DER.
func CertFingerprint(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}

// CAPool returns a pool holding only attestd's CA.
func (p *CA) CAPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CACert)
	return pool
}

// CACertPath is where the CA certificate lives (give it to clients).
func (p *CA) CACertPath() string { return filepath.Join(p.Dir, caCertFile) }

// ErrNoCA: the data directory holds no CA certificate (DATA/tls/ca.crt).
var ErrNoCA = errors.New("no attestd CA")

// newCA is the CA of dataDir/tls, its CA not loaded yet, with the
// clock and randomness defaulted, and where its CA files live.
func newCA(dataDir string, now func() time.Time, rnd io.Reader) (p *CA, certPath, keyPath string) {
	if now == nil {
		now = time.Now
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	dir := filepath.Join(dataDir, "tls")
	return &CA{Dir: dir, Now: now, Rand: rnd}, filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
}

// Load opens the existing CA in dataDir/tls. When there is no
// ca.crt the error wraps ErrNoCA; nothing is created.
func Load(dataDir string, now func() time.Time, rnd io.Reader) (*CA, error) {
	p, certPath, keyPath := newCA(dataDir, now, rnd)
	if _, err := os.Stat(certPath); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s", ErrNoCA, certPath)
	} else if err != nil {
		return nil, fmt.Errorf("loading CA: %w", err)
	}
	var err error
	p.CACert, p.CAKey, err = loadCertKey(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("loading CA: %w", err)
	}
	if !p.CACert.IsCA {
		return nil, fmt.Errorf("loading CA: %s is not a CA certificate", certPath)
	}
	return p, nil
}

// LoadOrCreate opens the CA in dataDir/tls, creating it (ECDSA P-256,
// 10 years) when absent. created reports whether it was made now.
func LoadOrCreate(dataDir string, now func() time.Time, rnd io.Reader) (p *CA, created bool, err error) {
	p, err = Load(dataDir, now, rnd)
	if err == nil {
		return p, false, nil
	}
	if !errors.Is(err, ErrNoCA) {
		return nil, false, err
	}
	p, certPath, keyPath := newCA(dataDir, now, rnd)
	if err := os.MkdirAll(p.Dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("creating %s: %w", p.Dir, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), p.Rand)
	if err != nil {
		return nil, false, fmt.Errorf("generating CA key: %w", err)
	}
	t := p.Now().UTC()
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          mustSerial(p.Rand),
		Subject:               pkix.Name{CommonName: "Bulwark attestd CA " + host, Organization: []string{"Bulwark"}},
		NotBefore:             t.Add(-5 * time.Minute),
		NotAfter:              t.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(p.Rand, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, false, fmt.Errorf("creating CA certificate: %w", err)
	}
	if err := writeCertKey(certPath, keyPath, der, key); err != nil {
		return nil, false, err
	}
	p.CACert, _ = x509.ParseCertificate(der)
	p.CAKey = key
	return p, true, nil
}

// ServerCertificate returns the server certificate in p.Dir, issuing a new
// one when absent, expired within 30 days, or missing one of sans. The
// SANs always include localhost, 127.0.0.1, ::1 and the host name.
func (p *CA) ServerCertificate(extraSANs []string) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(p.Dir, serverCertFile), filepath.Join(p.Dir, serverKeyFile)
	sans := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		sans = append(sans, h)
	}
	for _, s := range extraSANs {
		if s = strings.TrimSpace(s); s != "" {
			sans = append(sans, s)
		}
	}
	if c, k, err := loadCertKey(certPath, keyPath); err == nil {
		if p.now().Add(30*24*time.Hour).Before(c.NotAfter) && coversSANs(c, sans) && c.CheckSignatureFrom(p.CACert) == nil {
			return tls.Certificate{Certificate: [][]byte{c.Raw, p.CACert.Raw}, PrivateKey: k, Leaf: c}, nil
		}
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "attestd", Organization: []string{"Bulwark"}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, key, err := p.issue(tmpl, 825*24*time.Hour)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issuing server certificate: %w", err)
	}
	if err := writeCertKey(certPath, keyPath, der, key); err != nil {
		return tls.Certificate{}, err
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der, p.CACert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// ClientCertOptions adjust IssueClientCertWith.
type ClientCertOptions struct {
	// Overwrite replaces an existing NAME.crt or NAME.key, and a ca.crt of
	// another CA, in the output directory. Without it they are refused.
	Overwrite bool
}

// IssueClientCert issues a client certificate for name with the given role
// URI (AdminRoleURI or HostRoleURI), valid for validity, and writes
// NAME.crt, NAME.key (0600) and ca.crt into outDir. It refuses to replace
// existing files (see IssueClientCertWith).
func (p *CA) IssueClientCert(name, roleURI string, validity time.Duration, outDir string) (certPath, keyPath string, err error) {
	return p.IssueClientCertWith(name, roleURI, validity, outDir, ClientCertOptions{})
}

// IssueClientCertWith is IssueClientCert with options. Unless
// o.Overwrite, it refuses (before issuing anything) when outDir already
// holds NAME.crt or NAME.key, or a ca.crt that is not this CA's.
func (p *CA) IssueClientCertWith(name, roleURI string, validity time.Duration, outDir string, o ClientCertOptions) (certPath, keyPath string, err error) {
	if err := ValidClientCertName(name); err != nil {
		return "", "", err
	}
	if err := CheckClientCertOutput(name, outDir, p.CACert, o.Overwrite); err != nil {
		return "", "", err
	}
	if a, err := os.Stat(outDir); err == nil {
		if b, err := os.Stat(p.Dir); err == nil && os.SameFile(a, b) {
			return "", "", fmt.Errorf("%s is the CA's own directory: write client certificates elsewhere", outDir)
		}
	}
	role, err := url.Parse(roleURI)
	if err != nil {
		return "", "", fmt.Errorf("role %q: %w", roleURI, err)
	}
	ou := "bulwark-host"
	if roleURI == AdminRoleURI {
		ou = "bulwark-admin"
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: []string{"Bulwark"}, OrganizationalUnit: []string{ou}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{role},
	}
	der, key, err := p.issue(tmpl, validity)
	if err != nil {
		return "", "", fmt.Errorf("issuing client certificate: %w", err)
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return "", "", fmt.Errorf("creating %s: %w", outDir, err)
	}
	certPath, keyPath = filepath.Join(outDir, name+".crt"), filepath.Join(outDir, name+".key")
	if err := writeCertKey(certPath, keyPath, der, key); err != nil {
		return "", "", err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(outDir, caCertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.CACert.Raw}), 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// ValidClientCertName checks a client certificate name: 1-64 letters,
// digits, '-', '_' and '.' (not leading), and not "ca", whose files would
// be the ca.crt written next to them (and a client key named ca.key).
func ValidClientCertName(name string) error {
	if err := validName(name); err != nil {
		return err
	}
	if base := strings.TrimSuffix(caCertFile, ".crt"); strings.EqualFold(name, base) {
		return fmt.Errorf("name %q: %s.crt and %s.key would collide with the CA certificate %s written next to them: choose another name", name, name, name, caCertFile)
	}
	return nil
}

// CheckClientCertOutput reports whether IssueClientCert may write name's
// files into outDir: unless overwrite, NAME.crt and NAME.key must not
// exist, nor a ca.crt other than ca's (ca nil: a CA not created yet, so
// any existing ca.crt is another's). outDir, when it exists, must be a
// directory. It creates nothing.
func CheckClientCertOutput(name, outDir string, ca *x509.Certificate, overwrite bool) error {
	if fi, err := os.Stat(outDir); err == nil && !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", outDir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if overwrite {
		return nil
	}
	for _, f := range []string{name + ".crt", name + ".key"} {
		path := filepath.Join(outDir, f)
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("%s already exists: refusing to overwrite it (use --force, or another --name or -o)", path)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	caPath := filepath.Join(outDir, caCertFile)
	b, err := os.ReadFile(caPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if blk, _ := pem.Decode(b); ca == nil || blk == nil || !bytes.Equal(blk.Bytes, ca.Raw) {
		return fmt.Errorf("%s already exists and is not this attestd's CA certificate: refusing to replace it (use --force, or another -o)", caPath)
	}
	return nil
}

// HasRole reports whether a verified client certificate carries roleURI.
func HasRole(c *x509.Certificate, roleURI string) bool {
	for _, u := range c.URIs {
		if u.String() == roleURI {
			return true
		}
	}
	return false
}

func validName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("name %q: want 1-64 characters", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') || name[0] == '.' {
			return fmt.Errorf("name %q: use letters, digits, '-', '_' and '.' (not leading)", name)
		}
	}
	return nil
}

func (p *CA) now() time.Time {
	if p.Now == nil {
		return time.Now()
	}
	return p.Now()
}

func (p *CA) issue(tmpl *x509.Certificate, validity time.Duration) ([]byte, *ecdsa.PrivateKey, error) {
	rnd := p.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, nil, err
	}
	t := p.now().UTC()
	tmpl.SerialNumber = mustSerial(rnd)
	tmpl.NotBefore = t.Add(-5 * time.Minute)
	tmpl.NotAfter = t.Add(validity)
	if tmpl.NotAfter.After(p.CACert.NotAfter) {
		tmpl.NotAfter = p.CACert.NotAfter
	}
	der, err := x509.CreateCertificate(rnd, tmpl, p.CACert, &key.PublicKey, p.CAKey)
	return der, key, err
}

func coversSANs(c *x509.Certificate, sans []string) bool {
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			found := false
			for _, have := range c.IPAddresses {
				found = found || have.Equal(ip)
			}
			if !found {
				return false
			}
		} else if c.VerifyHostname(s) != nil {
			return false
		}
	}
	return true
}

func mustSerial(rnd io.Reader) *big.Int {
	n, err := randSerial(rnd)
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func randSerial(rnd io.Reader) (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := io.ReadFull(rnd, b); err != nil {
		return nil, err
	}
	b[0] &= 0x7f
	return new(big.Int).SetBytes(b), nil
}

func loadCertKey(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	blk, _ := pem.Decode(cb)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s: no PEM CERTIFICATE", certPath)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	kblk, _ := pem.Decode(kb)
	if kblk == nil {
		return nil, nil, fmt.Errorf("%s: no PEM key", keyPath)
	}
	k, err := x509.ParseECPrivateKey(kblk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	if !k.PublicKey.Equal(c.PublicKey) {
		return nil, nil, fmt.Errorf("%s does not match %s", keyPath, certPath)
	}
	return c, k, nil
}

func writeCertKey(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}
