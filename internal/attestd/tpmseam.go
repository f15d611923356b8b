package attestd

import (
	"crypto/x509"
	"time"

	"github.com/bulwark-project/bulwark/tpm/verify"
)

// The TPM verifier side lives in tpm/verify; these are the calls attestd
// makes into it, in one place.

type tpmPublic = verify.Public

func parseEKPublic(b []byte) (*tpmPublic, error) { return verify.ParseEKPublic(b) }
func parseAKPublic(b []byte) (*tpmPublic, error) { return verify.ParseAKPublic(b) }

// makeCredential seals secret to the EK, bound to the AK's name.
func makeCredential(ek *tpmPublic, akName, secret []byte) (blob, encSecret []byte, err error) {
	return verify.MakeCredential(ek.Raw, akName, secret)
}

// verifyEKCertificate checks the certificate chains to roots and certifies
// this EK.
func verifyEKCertificate(der []byte, ek *tpmPublic, roots, intermediates *x509.CertPool, now time.Time) error {
	_, err := verify.VerifyEKCertificate(der, ek.Raw, verify.EKCertOptions{
		Roots: roots, Intermediates: intermediates, Now: func() time.Time { return now },
	})
	return err
}

// verifyQuote checks the quote's signature by the AK, magic and type,
// extraData == nonce, and that the PCR selection and digest match pcrs.
// It returns the quote's clock information (the TPM's boot cycle).
func verifyQuote(akPublic, attest, sig, nonce []byte, pcrs map[uint32][]byte) (clockInfo, error) {
	m := make(map[int][]byte, len(pcrs))
	for i, v := range pcrs {
		m[int(i)] = v
	}
	r, err := verify.VerifyQuote(akPublic, attest, sig, nonce, m)
	if err != nil {
		return clockInfo{}, err
	}
	return r.Clock, nil
}

// clockInfo is a verified quote's TPMS_CLOCK_INFO.
type clockInfo = verify.ClockInfo
