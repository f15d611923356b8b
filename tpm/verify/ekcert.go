package verify

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// ErrEKCert means an EK certificate failed verification.
var ErrEKCert = errors.New("EK certificate verification failed")

var (
	oidSubjectAltName  = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidTCGAttributes   = asn1.ObjectIdentifier{2, 23, 133, 2} // tcg-at-tpm*: manufacturer, model, version, ...
	oidTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidEKCertificateKP = asn1.ObjectIdentifier{2, 23, 133, 8, 1} // tcg-kp-EKCertificate
)

// EKCertOptions configures VerifyEKCertificate.
type EKCertOptions struct {
	// Roots are the EK CAs to trust (TPM manufacturers' roots; for the
	// managed swtpm, its swtpm_localca root). Required.
	Roots *x509.CertPool
	// Intermediates are extra CA certificates that may complete the chain
	// (a TPM stores only its leaf; swtpm_localca's issuercert.pem).
	Intermediates *x509.CertPool
	// Now is the verification time; zero means time.Now().
	Now func() time.Time
}

// EKCertInfo is what VerifyEKCertificate returns after every check passed.
type EKCertInfo struct {
	Certificate *x509.Certificate
	Chain       []*x509.Certificate // leaf first, root last
	// TPM identification from the certificate's subject alternative name
	// (TCG EK Credential Profile): e.g. "id:00001014", "swtpm", "id:20191023".
	Manufacturer, Model, Version string
}

// VerifyEKCertificate checks an EK certificate (DER; trailing padding as
// found in TPM NV indices is ignored) against ekPublic (TPMT_PUBLIC or
// TPM2B_PUBLIC, checked by ParseEKPublic):
//
//  1. the certificate chains to one of opts.Roots at opts.Now, for any
//     extended key usage, via opts.Intermediates if needed;
//  2. if it has an extended key usage extension, it includes
//     tcg-kp-EKCertificate (2.23.133.8.1);
//  3. its critical subject alternative name, which EK certificates use for
//     the TPM's manufacturer, model and version as a directoryName Go does
//     not process, holds only directoryNames of TCG attributes (2.23.133.2.*);
//     any other unhandled critical extension fails verification;
//  4. its public key equals the EK's.
func VerifyEKCertificate(certDER, ekPublic []byte, opts EKCertOptions) (*EKCertInfo, error) {
	if opts.Roots == nil {
		return nil, fmt.Errorf("%w: no EK CA roots configured", ErrEKCert)
	}
	if len(certDER) > MaxCertSize {
		return nil, fmt.Errorf("%w: certificate of %d bytes exceeds limit %d", ErrEKCert, len(certDER), MaxCertSize)
	}
	ek, err := ParseEKPublic(ekPublic)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(TrimDER(certDER))
	if err != nil {
		return nil, fmt.Errorf("%w: parsing certificate: %v", ErrEKCert, err)
	}
	info := &EKCertInfo{Certificate: cert}
	// Handle the critical SAN ourselves, on a copy, so that x509's chain
	// verification still rejects every other unhandled critical extension.
	c := *cert
	c.UnhandledCriticalExtensions = nil
	for _, oid := range cert.UnhandledCriticalExtensions {
		if !oid.Equal(oidSubjectAltName) {
			c.UnhandledCriticalExtensions = append(c.UnhandledCriticalExtensions, oid)
			continue
		}
		if err := parseTPMSAN(cert, info); err != nil {
			return nil, fmt.Errorf("%w: subject alternative name: %v", ErrEKCert, err)
		}
	}
	if len(cert.ExtKeyUsage) > 0 || len(cert.UnknownExtKeyUsage) > 0 {
		if !slices.ContainsFunc(cert.UnknownExtKeyUsage, oidEKCertificateKP.Equal) {
			return nil, fmt.Errorf("%w: extended key usage lacks tcg-kp-EKCertificate (2.23.133.8.1)", ErrEKCert)
		}
	}
	now := time.Now()
	if opts.Now != nil {
		now = opts.Now()
	}
	chains, err := c.Verify(x509.VerifyOptions{
		Roots:         opts.Roots,
		Intermediates: opts.Intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEKCert, err)
	}
	info.Chain = chains[0]
	info.Chain[0] = cert
	pk, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pk.Equal(ek.Key) {
		return nil, fmt.Errorf("%w: certificate public key is not the EK", ErrEKCert)
	}
	return info, nil
}

// parseTPMSAN checks the SAN extension holds only directoryNames made of
// TCG TPM attributes and records manufacturer, model and version.
func parseTPMSAN(cert *x509.Certificate, info *EKCertInfo) error {
	var val []byte
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidSubjectAltName) {
			val = e.Value
		}
	}
	in := cryptobyte.String(val)
	var names cryptobyte.String
	if !in.ReadASN1(&names, cbasn1.SEQUENCE) || !in.Empty() {
		return errors.New("not a GeneralNames sequence")
	}
	if names.Empty() {
		return errors.New("empty")
	}
	for !names.Empty() {
		var gn cryptobyte.String
		var tag cbasn1.Tag
		if !names.ReadAnyASN1(&gn, &tag) {
			return errors.New("malformed GeneralName")
		}
		// directoryName [4] EXPLICIT Name
		if tag != cbasn1.Tag(4).Constructed().ContextSpecific() {
			return fmt.Errorf("unexpected critical name of tag %d (only TPM directoryNames are accepted)", uint8(tag)&0x1f)
		}
		var rdnSeq cryptobyte.String
		if !gn.ReadASN1(&rdnSeq, cbasn1.SEQUENCE) || !gn.Empty() {
			return errors.New("malformed directoryName")
		}
		for !rdnSeq.Empty() {
			var set cryptobyte.String
			if !rdnSeq.ReadASN1(&set, cbasn1.SET) {
				return errors.New("malformed RDN")
			}
			for !set.Empty() {
				var atv cryptobyte.String
				var oid asn1.ObjectIdentifier
				var v cryptobyte.String
				var vtag cbasn1.Tag
				if !set.ReadASN1(&atv, cbasn1.SEQUENCE) || !atv.ReadASN1ObjectIdentifier(&oid) ||
					!atv.ReadAnyASN1(&v, &vtag) || !atv.Empty() {
					return errors.New("malformed attribute")
				}
				if len(oid) != len(oidTCGAttributes)+1 || !slices.Equal(oid[:len(oidTCGAttributes)], oidTCGAttributes) {
					return fmt.Errorf("attribute %v is not a TCG TPM attribute", oid)
				}
				s := string(v)
				switch {
				case oid.Equal(oidTPMManufacturer):
					info.Manufacturer = s
				case oid.Equal(oidTPMModel):
					info.Model = s
				case oid.Equal(oidTPMVersion):
					info.Version = s
				}
			}
		}
	}
	return nil
}

// TrimDER returns the first DER element of b, dropping the padding that
// TPM NV indices often hold after a certificate. If b does not start with a
// well-formed DER length, b is returned unchanged (and will fail to parse).
func TrimDER(b []byte) []byte {
	s := cryptobyte.String(b)
	var elem cryptobyte.String
	var tag cbasn1.Tag
	if !s.ReadAnyASN1Element(&elem, &tag) {
		return b
	}
	return b[:len(elem)]
}
