package verify

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// tcgSAN builds a subject alternative name holding one directoryName with
// the given attributes, as EK certificates carry the TPM's identity.
func tcgSAN(t testing.TB, attrs ...any) []byte {
	t.Helper()
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // GeneralNames
		b.AddASN1(cbasn1.Tag(4).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // Name
				for i := 0; i < len(attrs); i += 2 {
					oid, val := attrs[i].(asn1.ObjectIdentifier), attrs[i+1].(string)
					b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1ObjectIdentifier(oid)
							b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(val)) })
						})
					})
				}
			})
		})
	})
	return b.BytesOrPanic()
}

type ekPKI struct {
	root, inter         *x509.Certificate
	rootKey, interKey   *ecdsa.PrivateKey
	roots, intermediate *x509.CertPool
	ekKey               *rsa.PrivateKey
	ekPub               []byte
}

func newEKPKI(t testing.TB) *ekPKI {
	t.Helper()
	p := &ekPKI{}
	var err error
	p.rootKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.interKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	mk := func(tmpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ca := func(cn string, serial int64) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	}
	rootT := ca("test TPM root", 1)
	p.root = mk(rootT, rootT, &p.rootKey.PublicKey, p.rootKey)
	p.inter = mk(ca("test TPM issuing CA", 2), p.root, &p.interKey.PublicKey, p.rootKey)
	p.roots, p.intermediate = x509.NewCertPool(), x509.NewCertPool()
	p.roots.AddCert(p.root)
	p.intermediate.AddCert(p.inter)
	if p.ekKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	ek := tpm2.RSAEKTemplate
	ek.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: p.ekKey.N.Bytes()})
	p.ekPub = tpm2.Marshal(ek)
	return p
}

// leaf issues an EK certificate like a TPM manufacturer's, changed by mut.
func (p *ekPKI) leaf(t testing.TB, mut func(*x509.Certificate)) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(12 * time.Hour),
		KeyUsage:           x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{oidEKCertificateKP},
		ExtraExtensions: []pkix.Extension{{Id: oidSubjectAltName, Critical: true, Value: tcgSAN(t,
			oidTPMManufacturer, "id:00001014", oidTPMModel, "swtpm", oidTPMVersion, "id:20191023")}},
	}
	if mut != nil {
		mut(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.inter, &p.ekKey.PublicKey, p.interKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestVerifyEKCertificate(t *testing.T) {
	p := newEKPKI(t)
	other := newEKPKI(t)
	opts := EKCertOptions{Roots: p.roots, Intermediates: p.intermediate}

	good := p.leaf(t, nil)
	info, err := VerifyEKCertificate(good, p.ekPub, opts)
	if err != nil {
		t.Fatal(err)
	}
	if info.Manufacturer != "id:00001014" || info.Model != "swtpm" || info.Version != "id:20191023" || len(info.Chain) != 3 {
		t.Fatalf("info = %+v (chain %d)", info, len(info.Chain))
	}
	if _, err := VerifyEKCertificate(append(bytes.Clone(good), 0xff, 0xff, 0, 0), p.ekPub, opts); err != nil {
		t.Fatalf("NV padding after the certificate: %v", err)
	}
	// Go alone refuses the certificate: the SAN is an unhandled critical
	// extension. Make sure that is what this test exercises.
	c, _ := x509.ParseCertificate(good)
	if len(c.UnhandledCriticalExtensions) != 1 {
		t.Fatalf("test certificate has unhandled critical extensions %v", c.UnhandledCriticalExtensions)
	}

	cases := []struct {
		name string
		cert []byte
		ek   []byte
		opts EKCertOptions
	}{
		{"another EK", good, other.ekPub, opts},
		{"untrusted root", good, p.ekPub, EKCertOptions{Roots: other.roots, Intermediates: p.intermediate}},
		{"missing intermediate", good, p.ekPub, EKCertOptions{Roots: p.roots}},
		{"no roots", good, p.ekPub, EKCertOptions{Intermediates: p.intermediate}},
		{"expired", good, p.ekPub, EKCertOptions{Roots: p.roots, Intermediates: p.intermediate,
			Now: func() time.Time { return time.Now().Add(48 * time.Hour) }}},
		{"non-TCG attribute in critical SAN", p.leaf(t, func(c *x509.Certificate) {
			c.ExtraExtensions[0].Value = tcgSAN(t, oidTPMManufacturer, "id:00001014", asn1.ObjectIdentifier{2, 5, 4, 3}, "evil")
		}), p.ekPub, opts},
		{"other unknown critical extension", p.leaf(t, func(c *x509.Certificate) {
			c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}})
		}), p.ekPub, opts},
		{"wrong extended key usage", p.leaf(t, func(c *x509.Certificate) {
			c.UnknownExtKeyUsage = nil
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}), p.ekPub, opts},
		{"garbage", []byte{0x30, 0x03, 1, 2, 3}, p.ekPub, opts},
		{"signed by the wrong CA", func() []byte {
			tmpl, _ := x509.ParseCertificate(good)
			der, _ := x509.CreateCertificate(rand.Reader, tmpl, other.inter, &p.ekKey.PublicKey, other.interKey)
			return der
		}(), p.ekPub, opts},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := VerifyEKCertificate(c.cert, c.ek, c.opts); !errors.Is(err, ErrEKCert) {
				t.Fatalf("VerifyEKCertificate = %v, want ErrEKCert", err)
			}
		})
	}
	// A certificate without the SAN (some vendors) still verifies.
	plain := p.leaf(t, func(c *x509.Certificate) { c.ExtraExtensions = nil })
	if _, err := VerifyEKCertificate(plain, p.ekPub, opts); err != nil {
		t.Fatalf("certificate without SAN: %v", err)
	}
}

func FuzzVerifyEKCertificate(f *testing.F) {
	p := newEKPKI(f)
	f.Add(p.leaf(f, nil))
	f.Add(p.leaf(f, func(c *x509.Certificate) { c.ExtraExtensions = nil }))
	opts := EKCertOptions{Roots: p.roots, Intermediates: p.intermediate}
	f.Fuzz(func(t *testing.T, der []byte) {
		_, _ = VerifyEKCertificate(der, p.ekPub, opts)
		info := &EKCertInfo{}
		c := &x509.Certificate{Extensions: []pkix.Extension{{Id: oidSubjectAltName, Value: der}}}
		_ = parseTPMSAN(c, info)
	})
}

func TestMakeCredentialRejects(t *testing.T) {
	p := newEKPKI(t)
	ak := newECCAK(t, akAttrs(), elliptic.P256())
	akp, err := ParseAKPublic(ak.pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := MakeCredential(p.ekPub, akp.Name, []byte("0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	eccEK := tpm2.ECCEKTemplate
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	eccEK.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, 32))},
		Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, 32))}})
	if _, _, err := MakeCredential(tpm2.Marshal(eccEK), akp.Name, []byte("secret")); err != nil {
		t.Fatalf("ECC EK: %v", err)
	}
	cases := []struct {
		name         string
		ek, name2, s []byte
	}{
		{"AK as EK", ak.pub, akp.Name, []byte("s")},
		{"short name", p.ekPub, akp.Name[:10], []byte("s")},
		{"sha1 name", p.ekPub, append([]byte{0, 4}, make([]byte, 20)...), []byte("s")},
		{"empty secret", p.ekPub, akp.Name, nil},
		{"long secret", p.ekPub, akp.Name, make([]byte, 33)},
		{"garbage EK", []byte{1, 2, 3}, akp.Name, []byte("s")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, _, err := MakeCredential(c.ek, c.name2, c.s); err == nil {
				t.Fatal("MakeCredential succeeded")
			}
		})
	}
}
