package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/google/go-tpm/tpm2"
)

// softAK is a software key with a TPM-style public area, to build quotes
// for the verifier's table tests (quotes from real TPMs are tested in the
// tpm package against the simulator and swtpm).
type softAK struct {
	pub    []byte // TPMT_PUBLIC
	signer crypto.Signer
}

func akAttrs() tpm2.TPMAObject {
	return tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, Restricted: true, SignEncrypt: true}
}

func newECCAK(t testing.TB, attrs tpm2.TPMAObject, curve elliptic.Curve) *softAK {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := tpm2.TPMECCNistP256
	if curve == elliptic.P384() {
		id = tpm2.TPMECCNistP384
	}
	size := (curve.Params().BitSize + 7) / 8
	pub := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUAsymScheme(
				tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
			CurveID: id,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, size))},
			Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, size))},
		}),
	}
	return &softAK{pub: tpm2.Marshal(pub), signer: k}
}

func newRSAAK(t testing.TB) *softAK {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: akAttrs(),
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSASSA, Details: tpm2.NewTPMUAsymScheme(
				tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256})},
			KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()}),
	}
	return &softAK{pub: tpm2.Marshal(pub), signer: k}
}

func pcrSel(hash tpm2.TPMAlgID, pcrs ...uint) tpm2.TPMSPCRSelection {
	return tpm2.TPMSPCRSelection{Hash: hash, PCRSelect: tpm2.PCClientCompatible.PCRs(pcrs...)}
}

func attestFor(nonce []byte, pcrs map[int][]byte) tpm2.TPMSAttest {
	var idx []uint
	for i := range pcrs {
		idx = append(idx, uint(i))
	}
	return tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: make([]byte, 34)},
		ExtraData:       tpm2.TPM2BData{Buffer: nonce},
		ClockInfo:       tpm2.TPMSClockInfo{Clock: 1234, ResetCount: 7, RestartCount: 2, Safe: true},
		FirmwareVersion: 42,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{pcrSel(tpm2.TPMAlgSHA256, idx...)}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: PCRDigest(crypto.SHA256, pcrs)},
		}),
	}
}

// sign signs quoted like a TPM would and returns a TPMT_SIGNATURE.
func (ak *softAK) sign(t testing.TB, quoted []byte) []byte {
	t.Helper()
	d := sha256.Sum256(quoted)
	sig, err := ak.signer.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	switch ak.signer.(type) {
	case *ecdsa.PrivateKey:
		var rs struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(sig, &rs); err != nil {
			t.Fatal(err)
		}
		return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(
			tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{Hash: tpm2.TPMAlgSHA256,
				SignatureR: tpm2.TPM2BECCParameter{Buffer: rs.R.Bytes()},
				SignatureS: tpm2.TPM2BECCParameter{Buffer: rs.S.Bytes()}})})
	default:
		return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA, Signature: tpm2.NewTPMUSignature(
			tpm2.TPMAlgRSASSA, &tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: sig}})})
	}
}

func testPCRs() map[int][]byte {
	return map[int][]byte{
		0:  bytes.Repeat([]byte{0xa0}, 32),
		13: bytes.Repeat([]byte{0x13}, 32),
	}
}

func TestVerifyQuote(t *testing.T) {
	ecc := newECCAK(t, akAttrs(), elliptic.P256())
	other := newECCAK(t, akAttrs(), elliptic.P256())
	rsaAK := newRSAAK(t)
	nonce := bytes.Repeat([]byte{0x5a}, 32)

	type input struct {
		ak, quoted, sig, nonce []byte
		pcrs                   map[int][]byte
	}
	build := func(ak *softAK, mut func(a *tpm2.TPMSAttest)) input {
		a := attestFor(nonce, testPCRs())
		if mut != nil {
			mut(&a)
		}
		q := tpm2.Marshal(a)
		return input{ak: ak.pub, quoted: q, sig: ak.sign(t, q), nonce: nonce, pcrs: testPCRs()}
	}
	withNonce := func(size int) input {
		n := bytes.Repeat([]byte{0x5c}, size)
		q := tpm2.Marshal(attestFor(n, testPCRs()))
		return input{ak: ecc.pub, quoted: q, sig: ecc.sign(t, q), nonce: n, pcrs: testPCRs()}
	}
	cases := []struct {
		name    string
		in      func() input
		wantErr error // nil means success
	}{
		{"ecc ok", func() input { return build(ecc, nil) }, nil},
		{"rsa ok", func() input { return build(rsaAK, nil) }, nil},
		{"tpm2b AK public ok", func() input {
			in := build(ecc, nil)
			in.ak = append([]byte{byte(len(in.ak) >> 8), byte(len(in.ak))}, in.ak...)
			return in
		}, nil},
		{"wrong nonce", func() input {
			in := build(ecc, nil)
			in.nonce = bytes.Repeat([]byte{0x5b}, 32)
			return in
		}, ErrQuote},
		{"nonce prefix", func() input { in := build(ecc, nil); in.nonce = in.nonce[:16]; return in }, ErrQuote},
		{"nonce too short", func() input { in := build(ecc, nil); in.nonce = in.nonce[:4]; return in }, ErrQuote},
		// A quote honestly over a nonce outside limits.CheckNonceSize: the
		// verifier once accepted 8..15 bytes, which the store refused.
		{"8-byte nonce", func() input { return withNonce(8) }, ErrQuote},
		{"15-byte nonce", func() input { return withNonce(limits.MinNonceSize - 1) }, ErrQuote},
		{"16-byte nonce ok", func() input { return withNonce(limits.MinNonceSize) }, nil},
		{"64-byte nonce ok", func() input { return withNonce(limits.MaxNonceSize) }, nil},
		{"65-byte nonce", func() input { return withNonce(limits.MaxNonceSize + 1) }, ErrQuote},
		{"tampered PCR value", func() input { in := build(ecc, nil); in.pcrs[13] = bytes.Repeat([]byte{0x14}, 32); return in }, ErrQuote},
		{"extra PCR given", func() input { in := build(ecc, nil); in.pcrs[7] = make([]byte, 32); return in }, ErrQuote},
		{"PCR missing", func() input { in := build(ecc, nil); delete(in.pcrs, 0); return in }, ErrQuote},
		{"PCR value wrong size", func() input { in := build(ecc, nil); in.pcrs[13] = make([]byte, 20); return in }, ErrQuote},
		{"PCR index out of range", func() input { in := build(ecc, nil); in.pcrs[24] = make([]byte, 32); return in }, ErrQuote},
		{"tampered attest", func() input { in := build(ecc, nil); in.quoted[len(in.quoted)-1] ^= 1; return in }, ErrQuote},
		{"signed by another key", func() input {
			in := build(ecc, nil)
			in.sig = other.sign(t, in.quoted)
			return in
		}, ErrQuote},
		{"rsa signature for ecc AK", func() input {
			in := build(ecc, nil)
			in.sig = rsaAK.sign(t, in.quoted)
			return in
		}, ErrQuote},
		{"ecc signature for rsa AK", func() input {
			in := build(rsaAK, nil)
			in.sig = ecc.sign(t, in.quoted)
			return in
		}, ErrQuote},
		{"wrong magic", func() input { return build(ecc, func(a *tpm2.TPMSAttest) { a.Magic = 0x12345678 }) }, ErrQuote},
		{"not a quote", func() input {
			return build(ecc, func(a *tpm2.TPMSAttest) {
				a.Type = tpm2.TPMSTAttestCertify
				a.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestCertify, &tpm2.TPMSCertifyInfo{})
			})
		}, ErrQuote},
		{"sha1 bank", func() input {
			return build(ecc, func(a *tpm2.TPMSAttest) {
				q, _ := a.Attested.Quote()
				q.PCRSelect.PCRSelections[0].Hash = tpm2.TPMAlgSHA1
			})
		}, ErrQuote},
		{"two banks", func() input {
			return build(ecc, func(a *tpm2.TPMSAttest) {
				q, _ := a.Attested.Quote()
				q.PCRSelect.PCRSelections = append(q.PCRSelect.PCRSelections, pcrSel(tpm2.TPMAlgSHA384, 0))
			})
		}, ErrQuote},
		{"trailing attest bytes", func() input {
			a := attestFor(nonce, testPCRs())
			q := append(tpm2.Marshal(a), 0)
			return input{ak: ecc.pub, quoted: q, sig: ecc.sign(t, q), nonce: nonce, pcrs: testPCRs()}
		}, ErrMalformed},
		{"AK not restricted", func() input {
			attrs := akAttrs()
			attrs.Restricted = false
			return build(newECCAK(t, attrs, elliptic.P256()), nil)
		}, ErrNotAK},
		{"AK not fixedTPM", func() input {
			attrs := akAttrs()
			attrs.FixedTPM = false
			return build(newECCAK(t, attrs, elliptic.P256()), nil)
		}, ErrNotAK},
		{"AK with decrypt", func() input {
			attrs := akAttrs()
			attrs.Decrypt = true
			return build(newECCAK(t, attrs, elliptic.P256()), nil)
		}, ErrNotAK},
		{"AK on P-384", func() input { return build(newECCAK(t, akAttrs(), elliptic.P384()), nil) }, ErrNotAK},
		{"AK garbage", func() input { in := build(ecc, nil); in.ak = in.ak[:20]; return in }, ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := c.in()
			res, err := VerifyQuote(in.ak, in.quoted, in.sig, in.nonce, in.pcrs)
			if c.wantErr == nil {
				if err != nil {
					t.Fatalf("VerifyQuote: %v", err)
				}
				if res.Clock().ResetCount != 7 || res.Clock().RestartCount != 2 || !res.Clock().Safe || res.FirmwareVersion() != 42 {
					t.Errorf("clock info = %+v fw %d", res.Clock(), res.FirmwareVersion())
				}
				if !bytes.Equal(res.PCRs()[13], in.pcrs[13]) || len(res.PCRs()) != len(in.pcrs) {
					t.Errorf("PCRs = %x", res.PCRs())
				}
				return
			}
			if err == nil {
				t.Fatalf("VerifyQuote succeeded, want %v", c.wantErr)
			}
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("VerifyQuote: %v, want %v", err, c.wantErr)
			}
		})
	}
}

func TestParseAKPublicName(t *testing.T) {
	ak := newECCAK(t, akAttrs(), elliptic.P256())
	p, err := ParseAKPublic(ak.pub)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(ak.pub)
	want := append([]byte{0, 0x0b}, h[:]...)
	if !bytes.Equal(p.Name, want) {
		t.Fatalf("Name = %x, want %x", p.Name, want)
	}
	if !p.Key.(*ecdsa.PublicKey).Equal(ak.signer.Public()) {
		t.Fatal("key mismatch")
	}
	// go-tpm computes the same Name.
	tp, err := tpm2.Unmarshal[tpm2.TPMTPublic](ak.pub)
	if err != nil {
		t.Fatal(err)
	}
	n, err := tpm2.ObjectName(tp)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(n.Buffer, p.Name) {
		t.Fatalf("go-tpm name %x != %x", n.Buffer, p.Name)
	}
}

func TestParsePublicRejects(t *testing.T) {
	ak := newECCAK(t, akAttrs(), elliptic.P256())
	offCurve := bytes.Clone(ak.pub)
	offCurve[len(offCurve)-1] ^= 1 // last byte of Y
	cases := map[string][]byte{
		"empty":       nil,
		"truncated":   ak.pub[:len(ak.pub)-1],
		"trailing":    append(bytes.Clone(ak.pub), 0),
		"off curve":   offCurve,
		"huge":        make([]byte, MaxPublicSize+10),
		"keyedhash":   {0x00, 0x08, 0x00, 0x0b, 0, 0, 0, 0, 0, 0},
		"sha1 name":   append([]byte{0x00, 0x23, 0x00, 0x04}, ak.pub[4:]...),
		"bad tpm2b":   append([]byte{0x00, 0x10}, ak.pub...),
		"only header": ak.pub[:8],
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := ParsePublic(b); err == nil {
				t.Fatal("ParsePublic succeeded")
			} else if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func FuzzVerifyQuote(f *testing.F) {
	ak := newECCAK(f, akAttrs(), elliptic.P256())
	nonce := bytes.Repeat([]byte{1}, 16)
	q := tpm2.Marshal(attestFor(nonce, testPCRs()))
	f.Add(ak.pub, q, ak.sign(f, q), nonce)
	rak := newRSAAK(f)
	f.Add(rak.pub, q, rak.sign(f, q), nonce)
	f.Add([]byte{}, []byte{}, []byte{}, []byte{})
	if b, err := os.ReadFile("testdata/swtpm-evidence.json"); err == nil {
		var ev swtpmEvidence
		if json.Unmarshal(b, &ev) == nil {
			h := func(s string) []byte { v, _ := hex.DecodeString(s); return v }
			f.Add(h(ev.AKPublic), h(ev.Quoted), h(ev.Signature), h(ev.Nonce))
		}
	}
	f.Fuzz(func(t *testing.T, akPub, quoted, sig, nonce []byte) {
		res, err := VerifyQuote(akPub, quoted, sig, nonce, testPCRs())
		if err == nil && res == nil {
			t.Fatal("nil result without error")
		}
	})
}

// FuzzParseAttest fuzzes the attest and signature parsers directly: through
// VerifyQuote the signature check stops almost every input before them.
func FuzzParseAttest(f *testing.F) {
	nonce := bytes.Repeat([]byte{1}, 16)
	ak := newECCAK(f, akAttrs(), elliptic.P256())
	q := tpm2.Marshal(attestFor(nonce, testPCRs()))
	f.Add(q, ak.sign(f, q))
	f.Add(q[:10], []byte{0, 0x18, 0, 0x0b, 0, 1, 1, 0, 1, 2})
	f.Fuzz(func(t *testing.T, quoted, sig []byte) {
		if a, err := parseAttest(quoted); err == nil {
			for _, s := range a.selections {
				for _, p := range s.pcrs {
					if p < 0 || p >= 64 {
						t.Fatalf("PCR index %d", p)
					}
				}
			}
		}
		_, _ = parseSignature(sig)
	})
}

func FuzzParsePublic(f *testing.F) {
	f.Add(newECCAK(f, akAttrs(), elliptic.P256()).pub)
	f.Add(newRSAAK(f).pub)
	ek := tpm2.RSAEKTemplate
	ek.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: bytes.Repeat([]byte{0xc1}, 256)})
	f.Add(tpm2.Marshal(ek))
	f.Add(tpm2.Marshal(tpm2.ECCEKTemplate))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePublic(b)
		if err != nil {
			return
		}
		if p.Key == nil || len(p.Name) < 34 {
			t.Fatalf("parsed public without key or name: %+v", p)
		}
		_, _ = ParseAKPublic(b)
		if _, err := ParseEKPublic(b); err == nil {
			_, _, _ = MakeCredential(b, p.Name, []byte("secret"))
		}
	})
}

func BenchmarkVerifyQuote(b *testing.B) {
	ak := newECCAK(b, akAttrs(), elliptic.P256())
	nonce := bytes.Repeat([]byte{1}, 32)
	pcrs := testPCRs()
	q := tpm2.Marshal(attestFor(nonce, pcrs))
	sig := ak.sign(b, q)
	// Baseline in the same run: the bare ECDSA verification that any quote
	// check must do.
	d := sha256.Sum256(q)
	der, _ := ak.signer.Sign(rand.Reader, d[:], crypto.SHA256)
	pub := ak.signer.Public().(*ecdsa.PublicKey)
	const baseN = 200
	start := time.Now()
	for range baseN {
		if !ecdsa.VerifyASN1(pub, d[:], der) {
			b.Fatal("baseline verify failed")
		}
	}
	base := time.Since(start) / baseN
	b.ResetTimer()
	for b.Loop() {
		if _, err := VerifyQuote(ak.pub, q, sig, nonce, pcrs); err != nil {
			b.Fatal(err)
		}
	}
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(base.Nanoseconds()), "ecdsa-ns/op")
	b.ReportMetric(float64(per)/float64(base), "x-ecdsa")
}
