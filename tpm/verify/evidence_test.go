package verify

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"github.com/bulwark-project/bulwark/tpm/limits"
	"os"
	"strconv"
	"testing"
	"time"
)

// swtpmEvidence is real evidence recorded from swtpm by the tpm package's
// TestWriteSwtpmEvidence (-update), with the expected results beside it.
type swtpmEvidence struct {
	EKPublic       string            `json:"ek_public"`
	EKCertificate  string            `json:"ek_certificate"`
	CARoot         string            `json:"ca_root_pem"`
	CAIntermediate string            `json:"ca_intermediate_pem"`
	AKPublic       string            `json:"ak_public"`
	Nonce          string            `json:"nonce"`
	Quoted         string            `json:"quoted"`
	Signature      string            `json:"signature"`
	PCRs           map[string]string `json:"pcrs"`
	Expected       struct {
		AKName       string `json:"ak_name"`
		ResetCount   uint32 `json:"reset_count"`
		RestartCount uint32 `json:"restart_count"`
		LaunchPCR    string `json:"launch_pcr"`
	} `json:"expected"`
}

func loadEvidence(t *testing.T) (ev swtpmEvidence, raw map[string][]byte, pcrs map[int][]byte) {
	t.Helper()
	b, err := os.ReadFile("testdata/swtpm-evidence.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	raw = map[string][]byte{}
	for k, v := range map[string]string{"ek": ev.EKPublic, "cert": ev.EKCertificate, "ak": ev.AKPublic,
		"nonce": ev.Nonce, "quoted": ev.Quoted, "sig": ev.Signature, "akname": ev.Expected.AKName, "launch": ev.Expected.LaunchPCR} {
		if raw[k], err = hex.DecodeString(v); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	pcrs = map[int][]byte{}
	for k, v := range ev.PCRs {
		i, _ := strconv.Atoi(k)
		pcrs[i], _ = hex.DecodeString(v)
	}
	return ev, raw, pcrs
}

func TestSwtpmEvidence(t *testing.T) {
	ev, raw, pcrs := loadEvidence(t)
	res, err := VerifyQuote(raw["ak"], raw["quoted"], raw["sig"], raw["nonce"], pcrs)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.AKName(), raw["akname"]) || res.Clock().ResetCount != ev.Expected.ResetCount ||
		res.Clock().RestartCount != ev.Expected.RestartCount || !bytes.Equal(res.PCRs()[limits.DefaultLaunchPCR], raw["launch"]) {
		t.Fatalf("result %+v differs from the expected %+v", res, ev.Expected)
	}
	// Any change to the PCR values is caught.
	pcrs[limits.DefaultLaunchPCR] = bytes.Repeat([]byte{0}, 32)
	if _, err := VerifyQuote(raw["ak"], raw["quoted"], raw["sig"], raw["nonce"], pcrs); !errors.Is(err, ErrQuote) {
		t.Fatalf("zeroed launch PCR: %v", err)
	}

	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(ev.CARoot)) || !inters.AppendCertsFromPEM([]byte(ev.CAIntermediate)) {
		t.Fatal("bad CA PEM in evidence")
	}
	cert, err := x509.ParseCertificate(TrimDER(raw["cert"]))
	if err != nil {
		t.Fatal(err)
	}
	at := func() time.Time { return cert.NotBefore.Add(time.Hour) }
	info, err := VerifyEKCertificate(raw["cert"], raw["ek"], EKCertOptions{Roots: roots, Intermediates: inters, Now: at})
	if err != nil {
		t.Fatal(err)
	}
	if info.Model != "swtpm" || info.Manufacturer != "id:00001014" {
		t.Fatalf("TPM identity from the certificate: %+v", info)
	}
	// The real swtpm certificate needs the SAN handling: plain x509 refuses it.
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: at(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Fatal("crypto/x509 accepted the EK certificate by itself; the SAN test exercises nothing")
	}
	if _, _, err := MakeCredential(raw["ek"], raw["akname"], []byte("0123456789abcdef0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
}
