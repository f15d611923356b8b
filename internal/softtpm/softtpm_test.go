package softtpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/tpm/limits"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/legacy/tpm2/credactivation"
	"github.com/google/go-tpm/tpm2"
)

func newTPM(t testing.TB, ek EKType) *TPM {
	t.Helper()
	tp, err := New(Options{EK: ek})
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// makeCredential uses go-tpm's own tpm2.CreateCredential (an implementation
// independent of this package's KDFs) as the verifier side.
func makeCredential(t testing.TB, ekPublic, name, secret []byte) (blob, encSecret []byte) {
	t.Helper()
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ekPublic)
	if err != nil {
		t.Fatalf("unmarshal EK public: %v", err)
	}
	key, err := tpm2.ImportEncapsulationKey(pub)
	if err != nil {
		t.Fatalf("import EK: %v", err)
	}
	blob, encSecret, err = tpm2.CreateCredential(rand.Reader, key, name, secret)
	if err != nil {
		t.Fatalf("CreateCredential: %v", err)
	}
	return blob, encSecret
}

func TestKeysHaveTPMShape(t *testing.T) {
	for _, ek := range []EKType{EKECC, EKRSA} {
		t.Run(ek.String(), func(t *testing.T) {
			tp := newTPM(t, ek)
			ekPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](tp.EKPublic())
			if err != nil {
				t.Fatal(err)
			}
			tmpl := tpm2.ECCEKTemplate
			if ek == EKRSA {
				tmpl = tpm2.RSAEKTemplate
			}
			if ekPub.ObjectAttributes != tmpl.ObjectAttributes || !bytes.Equal(ekPub.AuthPolicy.Buffer, tmpl.AuthPolicy.Buffer) || ekPub.NameAlg != tpm2.TPMAlgSHA256 {
				t.Errorf("EK attributes/policy differ from the TCG template: %+v", ekPub.ObjectAttributes)
			}
			ekName, _ := tpm2.ObjectName(ekPub)
			if !bytes.Equal(ekName.Buffer, tp.EKName()) {
				t.Error("EKName differs from go-tpm's ObjectName")
			}

			akPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](tp.AKPublic())
			if err != nil {
				t.Fatal(err)
			}
			a := akPub.ObjectAttributes
			if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.UserWithAuth || !a.Restricted || !a.SignEncrypt || a.Decrypt {
				t.Errorf("AK attributes are not those of a restricted signing key: %+v", a)
			}
			name, err := tpm2.ObjectName(akPub)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(name.Buffer, tp.AKName()) {
				t.Error("AKName differs from go-tpm's ObjectName of AKPublic")
			}
			k, err := tpm2.Pub(*akPub)
			if err != nil {
				t.Fatal(err)
			}
			if !k.(*ecdsa.PublicKey).Equal(tp.AKPublicKey()) {
				t.Error("AKPublic does not hold the AK's key")
			}
		})
	}
}

func TestActivateCredentialInteropGoTPM(t *testing.T) {
	for _, ek := range []EKType{EKECC, EKRSA} {
		t.Run(ek.String(), func(t *testing.T) {
			tp := newTPM(t, ek)
			for _, n := range []int{1, 16, 32} {
				secret := randBytes(t, n)
				blob, enc := makeCredential(t, tp.EKPublic(), tp.AKName(), secret)
				got, err := tp.ActivateCredential(blob, enc)
				if err != nil {
					t.Fatalf("ActivateCredential(%d-byte secret): %v", n, err)
				}
				if !bytes.Equal(got, secret) {
					t.Fatalf("activated %x, want %x", got, secret)
				}
			}
		})
	}
}

// TestActivateCredentialInteropLegacy checks against go-tpm's older,
// separately written credactivation package, which emits the TPM2B-wrapped
// forms.
func TestActivateCredentialInteropLegacy(t *testing.T) {
	for _, ek := range []EKType{EKECC, EKRSA} {
		t.Run(ek.String(), func(t *testing.T) {
			tp := newTPM(t, ek)
			var pub any
			switch ek {
			case EKRSA:
				pub = &tp.ekRSA.PublicKey
			case EKECC:
				pub = tp.ekECDH.PublicKey()
			}
			name := tp.AKName()
			secret := randBytes(t, 32)
			blob, enc, err := credactivation.Generate(&legacy.HashValue{Alg: legacy.AlgSHA256, Value: name[2:]}, pub, 16, secret)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tp.ActivateCredential(blob, enc)
			if err != nil {
				t.Fatalf("ActivateCredential: %v", err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatalf("activated %x, want %x", got, secret)
			}
		})
	}
}

func TestActivateCredentialRejects(t *testing.T) {
	for _, ek := range []EKType{EKECC, EKRSA} {
		t.Run(ek.String(), func(t *testing.T) {
			tp := newTPM(t, ek)
			other := newTPM(t, ek)
			secret := randBytes(t, 32)
			blob, enc := makeCredential(t, tp.EKPublic(), tp.AKName(), secret)
			otherAK, otherEnc := makeCredential(t, tp.EKPublic(), other.AKName(), secret)
			otherEK, otherEKEnc := makeCredential(t, other.EKPublic(), tp.AKName(), secret)

			flip := func(b []byte, i int) []byte { c := slices.Clone(b); c[i] ^= 0x01; return c }
			cases := []struct {
				name      string
				blob, enc []byte
				wantCred  bool // ErrCredential (vs. a parse error)
			}{
				{"made for another AK", otherAK, otherEnc, true},
				{"made for another EK", otherEK, otherEKEnc, true},
				{"HMAC flipped", flip(blob, 5), enc, true},
				{"encIdentity flipped", flip(blob, len(blob)-1), enc, true},
				{"secret flipped", blob, flip(enc, len(enc)-1), ek == EKRSA},
				{"secrets swapped", blob, otherEnc, true},
				{"empty blob", nil, enc, false},
				{"truncated blob", blob[:20], enc, false},
				{"truncated secret", blob, enc[:len(enc)-1], false},
				{"huge blob", make([]byte, 5000), enc, false},
			}
			for _, c := range cases {
				got, err := tp.ActivateCredential(c.blob, c.enc)
				if err == nil {
					t.Errorf("%s: activated %x, want an error", c.name, got)
					continue
				}
				if c.wantCred && !errors.Is(err, ErrCredential) {
					t.Errorf("%s: error %v, want ErrCredential", c.name, err)
				}
			}
		})
	}
}

// verifyQuote is an independent check of Quote's output with go-tpm's
// parser: signature, magic, type, signer, nonce and PCR digest.
func verifyQuote(t *testing.T, ak *ecdsa.PublicKey, akName, attest, sig, nonce []byte, pcrs map[int][]byte) error {
	t.Helper()
	s, err := tpm2.Unmarshal[tpm2.TPMTSignature](sig)
	if err != nil {
		return err
	}
	e, err := s.Signature.ECDSA()
	if err != nil {
		return err
	}
	d := sha256.Sum256(attest)
	if !ecdsa.Verify(ak, d[:], new(big.Int).SetBytes(e.SignatureR.Buffer), new(big.Int).SetBytes(e.SignatureS.Buffer)) {
		return errors.New("signature does not verify")
	}
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](attest)
	if err != nil {
		return err
	}
	if a.Type != tpm2.TPMSTAttestQuote || !bytes.Equal(a.QualifiedSigner.Buffer, akName) || !bytes.Equal(a.ExtraData.Buffer, nonce) {
		return errors.New("attest header mismatch")
	}
	q, err := a.Attested.Quote()
	if err != nil {
		return err
	}
	if len(q.PCRSelect.PCRSelections) != 1 || q.PCRSelect.PCRSelections[0].Hash != tpm2.TPMAlgSHA256 {
		return errors.New("selection is not one SHA-256 bank")
	}
	sel := q.PCRSelect.PCRSelections[0].PCRSelect
	h := sha256.New()
	for p := 0; p < len(sel)*8; p++ {
		if sel[p/8]&(1<<(p%8)) != 0 {
			v, ok := pcrs[p]
			if !ok {
				return errors.New("quote selects a PCR not expected")
			}
			h.Write(v)
		}
	}
	if !bytes.Equal(h.Sum(nil), q.PCRDigest.Buffer) {
		return errors.New("PCR digest mismatch")
	}
	return nil
}

func TestQuote(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := base
	tp, err := New(Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ev := sha256.Sum256([]byte("launch event"))
	if err := tp.Extend(limits.DefaultLaunchPCR, ev[:]); err != nil {
		t.Fatal(err)
	}
	var zero [32]byte
	want := sha256.Sum256(append(zero[:], ev[:]...))
	if v, _ := tp.PCR(limits.DefaultLaunchPCR); !bytes.Equal(v, want[:]) {
		t.Fatalf("PCR 13 = %x, want %x", v, want)
	}
	host := HostPCRValues(nil)
	if v, _ := tp.PCR(4); !bytes.Equal(v, host[4]) {
		t.Fatalf("PCR 4 = %x, HostPCRValues says %x", v, host[4])
	}

	now = base.Add(1500 * time.Millisecond)
	nonce := randBytes(t, 32)
	sel := []int{13, 0, 7}
	attest, sig, err := tp.Quote(sel, nonce)
	if err != nil {
		t.Fatal(err)
	}
	pcrs, _ := tp.ReadPCRs(sel)
	if err := verifyQuote(t, tp.AKPublicKey(), tp.AKName(), attest, sig, nonce, pcrs); err != nil {
		t.Fatalf("quote does not verify: %v", err)
	}
	a, _ := tpm2.Unmarshal[tpm2.TPMSAttest](attest)
	if a.ClockInfo.Clock != 1500 || !a.ClockInfo.Safe {
		t.Errorf("clock info %+v, want clock 1500 safe", a.ClockInfo)
	}

	// Tampering with any part is caught.
	for _, i := range []int{0, 10, len(attest) - 1} {
		bad := slices.Clone(attest)
		bad[i] ^= 1
		if verifyQuote(t, tp.AKPublicKey(), tp.AKName(), bad, sig, nonce, pcrs) == nil {
			t.Errorf("tampered attest byte %d verified", i)
		}
	}
	if verifyQuote(t, tp.AKPublicKey(), tp.AKName(), attest, sig, randBytes(t, 32), pcrs) == nil {
		t.Error("quote verified against another nonce")
	}
	other := newTPM(t, EKECC)
	if verifyQuote(t, other.AKPublicKey(), other.AKName(), attest, sig, nonce, pcrs) == nil {
		t.Error("quote verified with another AK")
	}
}

func TestQuoteAndExtendReject(t *testing.T) {
	tp := newTPM(t, EKECC)
	for _, c := range []struct {
		name  string
		pcrs  []int
		nonce []byte
	}{
		{"no PCRs", nil, []byte("n")},
		{"PCR 24", []int{24}, []byte("n")},
		{"negative PCR", []int{-1}, []byte("n")},
		{"duplicate", []int{13, 13}, []byte("n")},
		{"nonce 65 bytes", []int{13}, make([]byte, 65)},
	} {
		if _, _, err := tp.Quote(c.pcrs, c.nonce); err == nil {
			t.Errorf("Quote(%s) succeeded", c.name)
		}
	}
	if err := tp.Extend(13, make([]byte, 20)); err == nil {
		t.Error("Extend with a SHA-1-sized digest succeeded")
	}
	if err := tp.Extend(24, make([]byte, 32)); err == nil {
		t.Error("Extend of PCR 24 succeeded")
	}
	if _, err := New(Options{HostPCRs: map[int][][]byte{30: {make([]byte, 32)}}}); err == nil {
		t.Error("New with host PCR 30 succeeded")
	}
}

func TestKDFKnownAnswer(t *testing.T) {
	// Cross-check the package's own KDFs with go-tpm's.
	key := []byte("0123456789abcdef0123456789abcdef")
	for _, bits := range []int{128, 256, 300, 7} {
		if !bytes.Equal(kdfa(key, "STORAGE", []byte("u"), []byte("v"), bits), tpm2.KDFa(crypto.SHA256, key, "STORAGE", []byte("u"), []byte("v"), bits)) {
			t.Errorf("kdfa(%d bits) differs from go-tpm", bits)
		}
		if !bytes.Equal(kdfe(key, "IDENTITY", []byte("u"), []byte("v"), bits), tpm2.KDFe(crypto.SHA256, key, "IDENTITY", []byte("u"), []byte("v"), bits)) {
			t.Errorf("kdfe(%d bits) differs from go-tpm", bits)
		}
	}
}

func BenchmarkQuote(b *testing.B) {
	tp := newTPM(b, EKECC)
	nonce := randBytes(b, 32)
	for b.Loop() {
		if _, _, err := tp.Quote([]int{0, 4, 7, 13}, nonce); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNew(b *testing.B) {
	for b.Loop() {
		newTPM(b, EKECC)
	}
}

func FuzzActivateCredential(f *testing.F) {
	tp := newTPM(f, EKECC)
	blob, enc := makeCredential(f, tp.EKPublic(), tp.AKName(), []byte("seed corpus credential 32 bytes!"))
	f.Add(blob, enc)
	f.Add([]byte{0, 32}, []byte{0, 32, 1})
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, blob, enc []byte) {
		_, _ = tp.ActivateCredential(blob, enc)
	})
}

// TestQuoteMarshalMatchesGoTPM holds the hand-written marshalling of the
// quote structures to go-tpm's reflective tpm2.Marshal, byte for byte.
func TestQuoteMarshalMatchesGoTPM(t *testing.T) {
	for i := 0; i < 50; i++ {
		signer := append([]byte{0, 0x0b}, randBytes(t, 32)...)
		nonce := randBytes(t, i%65)
		digest := randBytes(t, 32)
		var sel []uint
		for p := uint(0); p < limits.NumPCRs; p++ {
			if randBytes(t, 1)[0]&1 == 1 {
				sel = append(sel, p)
			}
		}
		pcrSelect := tpm2.PCClientCompatible.PCRs(sel...)
		clock, fw := uint64(i)*123456789, uint64(0x20260101)+uint64(i)
		want := tpm2.Marshal(tpm2.TPMSAttest{
			Magic:           tpm2.TPMGeneratedValue,
			Type:            tpm2.TPMSTAttestQuote,
			QualifiedSigner: tpm2.TPM2BName{Buffer: signer},
			ExtraData:       tpm2.TPM2BData{Buffer: nonce},
			ClockInfo:       tpm2.TPMSClockInfo{Clock: clock, Safe: true},
			FirmwareVersion: fw,
			Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
				PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: pcrSelect}}},
				PCRDigest: tpm2.TPM2BDigest{Buffer: digest},
			}),
		})
		if got := marshalQuoteAttest(signer, nonce, clock, fw, pcrSelect, digest); !bytes.Equal(got, want) {
			t.Fatalf("TPMS_ATTEST differs from tpm2.Marshal:\n got %x\nwant %x", got, want)
		}
		r, s := new(big.Int).SetBytes(randBytes(t, 32)), new(big.Int).SetBytes(randBytes(t, 31))
		wantSig := tpm2.Marshal(tpm2.TPMTSignature{
			SigAlg: tpm2.TPMAlgECDSA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
				Hash:       tpm2.TPMAlgSHA256,
				SignatureR: tpm2.TPM2BECCParameter{Buffer: r.FillBytes(make([]byte, 32))},
				SignatureS: tpm2.TPM2BECCParameter{Buffer: s.FillBytes(make([]byte, 32))},
			}),
		})
		if got := marshalECDSASignature(r, s); !bytes.Equal(got, wantSig) {
			t.Fatalf("TPMT_SIGNATURE differs from tpm2.Marshal:\n got %x\nwant %x", got, wantSig)
		}
	}
}
