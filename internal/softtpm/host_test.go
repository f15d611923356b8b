package softtpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/enclave/wrap"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

func TestHostLaunchReplays(t *testing.T) {
	h := NewHost(newTPM(t, EKECC), 0)
	now := time.Date(2026, 11, 22, 5, 0, 0, 0, time.UTC)
	var launches []*Launch
	for i := 0; i < 3; i++ {
		l, err := h.Launch(SimulatedArtifacts(), "load", now)
		if err != nil {
			t.Fatal(err)
		}
		launches = append(launches, l)
	}
	ev, err := h.Attest([]int{0, 4, 7, limits.DefaultLaunchPCR}, []byte("nonce-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := measure.VerifyLog(ev.Log, limits.DefaultLaunchPCR, measure.SHA256, ev.PCRs[limits.DefaultLaunchPCR])
	if err != nil {
		t.Fatalf("launch log does not replay to the quoted PCR: %v", err)
	}
	got, err := v.BySandbox(launches[1].Event.SandboxID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.GuestPublicKey, launches[1].GuestKey.PublicKey()) || got.Kernel != SimulatedArtifacts().Kernel {
		t.Errorf("replayed event %+v does not match the launch", got)
	}
	// The guest key opens what is wrapped to it.
	w, err := wrap.Seal(got.GuestPublicKey, got.SandboxID, "db", []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := launches[1].GuestKey.Open(got.SandboxID, "db", w); err != nil || string(pt) != "pw" {
		t.Errorf("guest key does not open its secret: %v", err)
	}
	// A log that lost its last record no longer replays.
	short := NewHost(newTPM(t, EKECC), 0)
	if _, err := short.Launch(SimulatedArtifacts(), "load", now); err != nil {
		t.Fatal(err)
	}
	if _, err := measure.VerifyLog(short.Log(), limits.DefaultLaunchPCR, measure.SHA256, ev.PCRs[limits.DefaultLaunchPCR]); err == nil {
		t.Error("another host's log replayed to this host's PCR")
	}
}

func TestEKCertificate(t *testing.T) {
	now := time.Now()
	ca, err := LoadOrCreateEKCA(t.TempDir(), now)
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
		if !bytes.Equal(der, tp.EKCertificate()) {
			t.Error("EKCertificate does not return the issued certificate")
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.UnhandledCriticalExtensions) != 1 || !c.UnhandledCriticalExtensions[0].Equal(oidSubjectAltName) {
			t.Errorf("%s EK certificate: want exactly the TCG directoryName SAN critical and unhandled by x509, got %v", ek, c.UnhandledCriticalExtensions)
		}
		c.UnhandledCriticalExtensions = nil
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s EK certificate does not chain to the CA: %v", ek, err)
		}
		switch ek {
		case EKRSA:
			if !c.PublicKey.(*rsa.PublicKey).Equal(&tp.ekRSA.PublicKey) {
				t.Error("RSA EK certificate certifies another key")
			}
		case EKECC:
			k, _ := c.PublicKey.(*ecdsa.PublicKey).ECDH()
			if !k.Equal(tp.ekECDH.PublicKey()) {
				t.Error("ECC EK certificate certifies another key")
			}
		}
	}
	// Reloading the directory gives the same CA.
	dir := t.TempDir()
	a, err := LoadOrCreateEKCA(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateEKCA(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Cert.Equal(b.Cert) {
		t.Error("LoadOrCreateEKCA created a new CA over an existing one")
	}
}
