package softtpm

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
)

// These tests hold softtpm to the verifier attestd runs (tpm/verify): if
// the two disagree, the load generator would measure error paths.

func TestVerifierAcceptsKeys(t *testing.T) {
	for _, ek := range []EKType{EKECC, EKRSA} {
		tp := newTPM(t, ek)
		if _, err := verify.ParseEKPublic(tp.EKPublic()); err != nil {
			t.Errorf("%s: verify.ParseEKPublic: %v", ek, err)
		}
		ak, err := verify.ParseAKPublic(tp.AKPublic())
		if err != nil {
			t.Fatalf("%s: verify.ParseAKPublic: %v", ek, err)
		}
		if !bytes.Equal(ak.Name, tp.AKName()) {
			t.Errorf("%s: verifier computes AK name %x, softtpm %x", ek, ak.Name, tp.AKName())
		}
	}
}

func TestActivateCredentialInteropVerifier(t *testing.T) {
	for _, ek := range []EKType{EKECC, EKRSA} {
		t.Run(ek.String(), func(t *testing.T) {
			tp := newTPM(t, ek)
			other := newTPM(t, ek)
			secret := randBytes(t, 32)
			blob, enc, err := verify.MakeCredential(tp.EKPublic(), tp.AKName(), secret)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tp.ActivateCredential(blob, enc)
			if err != nil {
				t.Fatalf("ActivateCredential of verify.MakeCredential's output: %v", err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatalf("activated %x, want %x", got, secret)
			}
			// Made for another AK name: refused.
			blob, enc, err = verify.MakeCredential(tp.EKPublic(), other.AKName(), secret)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tp.ActivateCredential(blob, enc); !errors.Is(err, ErrCredential) {
				t.Errorf("credential for another AK: err %v, want ErrCredential", err)
			}
		})
	}
}

func TestVerifyQuoteAcceptsAndRejectsTamper(t *testing.T) {
	h := NewHost(newTPM(t, EKECC), 0)
	if _, err := h.Launch(SimulatedArtifacts(), "load", time.Now()); err != nil {
		t.Fatal(err)
	}
	nonce := randBytes(t, 32)
	sel := []int{0, 4, 7, limits.DefaultLaunchPCR}
	ev, err := h.Attest(sel, nonce)
	if err != nil {
		t.Fatal(err)
	}
	ak := h.TPM.AKPublic()
	res, err := verify.VerifyQuote(ak, ev.Quote, ev.Signature, nonce, ev.PCRs)
	if err != nil {
		t.Fatalf("verify.VerifyQuote rejects a softtpm quote: %v", err)
	}
	if !bytes.Equal(res.PCRs()[limits.DefaultLaunchPCR], ev.PCRs[limits.DefaultLaunchPCR]) {
		t.Error("verified PCR 13 differs")
	}

	other := newTPM(t, EKECC)
	flip := func(b []byte, i int) []byte { c := slices.Clone(b); c[i] ^= 0x80; return c }
	badPCRs := map[int][]byte{}
	for k, v := range ev.PCRs {
		badPCRs[k] = v
	}
	forged := sha256.Sum256([]byte("another kernel"))
	badPCRs[limits.DefaultLaunchPCR] = forged[:]
	cases := []struct {
		name                  string
		ak, quote, sig, nonce []byte
		pcrs                  map[int][]byte
	}{
		{"attest byte flipped (clock)", ak, flip(ev.Quote, len(ev.Quote)-60), ev.Signature, nonce, ev.PCRs},
		{"attest PCR digest flipped", ak, flip(ev.Quote, len(ev.Quote)-1), ev.Signature, nonce, ev.PCRs},
		{"signature flipped", ak, ev.Quote, flip(ev.Signature, len(ev.Signature)-1), nonce, ev.PCRs},
		{"other nonce", ak, ev.Quote, ev.Signature, randBytes(t, 32), ev.PCRs},
		{"other AK", other.AKPublic(), ev.Quote, ev.Signature, nonce, ev.PCRs},
		{"forged PCR value", ak, ev.Quote, ev.Signature, nonce, badPCRs},
	}
	for _, c := range cases {
		if _, err := verify.VerifyQuote(c.ak, c.quote, c.sig, c.nonce, c.pcrs); err == nil {
			t.Errorf("%s: verify.VerifyQuote accepted it", c.name)
		}
	}
}

func TestVerifierAcceptsEKCertificate(t *testing.T) {
	now := time.Now()
	ca, err := NewEKCA(now)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, ek := range []EKType{EKECC, EKRSA} {
		tp := newTPM(t, ek)
		der, err := ca.Certify(tp, now)
		if err != nil {
			t.Fatal(err)
		}
		info, err := verify.VerifyEKCertificate(der, tp.EKPublic(), verify.EKCertOptions{Roots: roots})
		if err != nil {
			t.Fatalf("%s: verify.VerifyEKCertificate: %v", ek, err)
		}
		if info.Model != "bulwark-softtpm" {
			t.Errorf("%s: model %q from the SAN", ek, info.Model)
		}
		// The certificate does not vouch for another TPM's EK.
		if _, err := verify.VerifyEKCertificate(der, newTPM(t, ek).EKPublic(), verify.EKCertOptions{Roots: roots}); err == nil {
			t.Errorf("%s: EK certificate accepted for another EK", ek)
		}
	}
	// Nor under another CA.
	other, _ := NewEKCA(now)
	otherRoots := x509.NewCertPool()
	otherRoots.AddCert(other.Cert)
	tp := newTPM(t, EKECC)
	der, _ := ca.Certify(tp, now)
	if _, err := verify.VerifyEKCertificate(der, tp.EKPublic(), verify.EKCertOptions{Roots: otherRoots}); err == nil {
		t.Error("EK certificate accepted under another CA")
	}
}
