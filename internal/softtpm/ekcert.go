package softtpm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// OIDs of the TCG EK Credential Profile (2.23.133 is tcg).
var (
	oidEKCertificate   = asn1.ObjectIdentifier{2, 23, 133, 8, 1} // tcg-kp-EKCertificate
	oidTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidSubjectAltName  = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// EK CA file names inside the directory LoadOrCreateEKCA manages.
const (
	EKCACertFile = "ek-ca.pem"
	EKCAKeyFile  = "ek-ca.key"
)

// EKCA is a stand-in TPM manufacturer CA that issues EK certificates to
// simulated TPMs, so attestd admits them the way it admits real hosts (its
// --ek-ca root verifies the certificate and that it certifies this EK).
// Safe for concurrent use.
type EKCA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     *ecdsa.PrivateKey
}

// NewEKCA creates a fresh CA valid from now for ten years.
func NewEKCA(now time.Time) (*EKCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("softtpm: EK CA key: %w", err)
	}
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Bulwark load generator"}, CommonName: "bulwark-load simulated TPM manufacturer EK CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("softtpm: EK CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &EKCA{Cert: cert, key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// LoadOrCreateEKCA loads the CA from dir (ek-ca.pem, ek-ca.key) or creates
// it there, so attestd can be started with dir/ek-ca.pem as its EK root
// before the load generator runs.
func LoadOrCreateEKCA(dir string, now time.Time) (*EKCA, error) {
	certPath, keyPath := filepath.Join(dir, EKCACertFile), filepath.Join(dir, EKCAKeyFile)
	certPEM, errC := os.ReadFile(certPath)
	keyPEM, errK := os.ReadFile(keyPath)
	if errC == nil && errK == nil {
		return parseEKCA(certPEM, keyPEM, certPath)
	}
	if !errors.Is(errC, os.ErrNotExist) || !errors.Is(errK, os.ErrNotExist) {
		return nil, fmt.Errorf("softtpm: EK CA in %s: need both %s and %s (or neither, to create them): %v, %v", dir, EKCACertFile, EKCAKeyFile, errC, errK)
	}
	ca, err := NewEKCA(now)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(ca.key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("softtpm: EK CA directory: %w", err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, fmt.Errorf("softtpm: writing EK CA key: %w", err)
	}
	if err := os.WriteFile(certPath, ca.CertPEM, 0o644); err != nil {
		return nil, fmt.Errorf("softtpm: writing EK CA certificate: %w", err)
	}
	return ca, nil
}

func parseEKCA(certPEM, keyPEM []byte, where string) (*EKCA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || cb.Type != "CERTIFICATE" || kb == nil || kb.Type != "EC PRIVATE KEY" {
		return nil, fmt.Errorf("softtpm: EK CA %s: want a PEM CERTIFICATE and an EC PRIVATE KEY beside it", where)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("softtpm: EK CA %s: %w", where, err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("softtpm: EK CA key for %s: %w", where, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("softtpm: EK CA %s: the key does not match the certificate", where)
	}
	return &EKCA{Cert: cert, CertPEM: certPEM, key: key}, nil
}

// Certify issues an EK certificate for t's EK, shaped as the TCG EK
// Credential Profile asks (EKU tcg-kp-EKCertificate, the TPM manufacturer,
// model and version in a directoryName subject alternative name; key usage
// keyEncipherment for RSA, keyAgreement for ECC), and stores it in t.
func (ca *EKCA) Certify(t *TPM, now time.Time) ([]byte, error) {
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	san, err := tpmSAN()
	if err != nil {
		return nil, err
	}
	var pub any
	usage := x509.KeyUsageKeyEncipherment
	switch t.ekType {
	case EKRSA:
		pub = &t.ekRSA.PublicKey
	case EKECC:
		k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), t.ekECDH.PublicKey().Bytes())
		if err != nil {
			return nil, fmt.Errorf("softtpm: EK as ECDSA key: %w", err)
		}
		pub, usage = k, x509.KeyUsageKeyAgreement
	}
	fp := sha256.Sum256(t.ekPublic)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "bulwark-load simulated EK " + hex.EncodeToString(fp[:8])},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              ca.Cert.NotAfter,
		KeyUsage:              usage,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{oidEKCertificate},
		BasicConstraintsValid: true,
		ExtraExtensions:       []pkix.Extension{{Id: oidSubjectAltName, Critical: true, Value: san}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("softtpm: EK certificate: %w", err)
	}
	t.mu.Lock()
	t.ekCert = der
	t.mu.Unlock()
	return der, nil
}

// EKCertificate returns the DER EK certificate issued by an EKCA, or nil.
func (t *TPM) EKCertificate() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return clone(t.ekCert)
}

// tpmSAN encodes GeneralNames { directoryName { manufacturer, model,
// version } } as the TCG EK Credential Profile describes.
func tpmSAN() ([]byte, error) {
	name := pkix.RDNSequence{{
		{Type: oidTPMManufacturer, Value: "id:53575450"}, // "SWTP", as swtpm reports
		{Type: oidTPMModel, Value: "bulwark-softtpm"},
		{Type: oidTPMVersion, Value: "id:00020000"},
	}}
	dn, err := asn1.Marshal(name)
	if err != nil {
		return nil, err
	}
	// directoryName is [4] EXPLICIT Name.
	gn, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dn})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: gn})
}

func randSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("softtpm: certificate serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}
