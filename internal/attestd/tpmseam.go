package attestd

import (
	"crypto/x509"
	"errors"
	"io"
	"time"

	"github.com/bulwark-project/bulwark/tpm/verify"
)

// The TPM verifier side lives in tpm/verify; these are the calls attestd
// makes into it, in one place.

type tpmPublic = verify.Public

func parseEKPublic(b []byte) (*tpmPublic, error) { return verify.ParseEKPublic(b) }
func parseAKPublic(b []byte) (*tpmPublic, error) { return verify.ParseAKPublic(b) }

var errTPMVerifierMissing = errors.New("TPM verifier not available in this build (tpm/verify MakeCredential/VerifyQuote/EK certificate check pending)")

func makeCredential(ek *tpmPublic, akName, secret []byte, rnd io.Reader) (blob, encSecret []byte, err error) {
	return nil, nil, errTPMVerifierMissing
}

func verifyEKCertificate(der []byte, ek *tpmPublic, roots *x509.CertPool, now time.Time) error {
	return errTPMVerifierMissing
}

func verifyQuote(ak *tpmPublic, attest, sig, nonce []byte, pcrs map[uint32][]byte) error {
	return errTPMVerifierMissing
}
