package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

const helperEnv = "BULWARK_TPM_TEST_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(helperMain(dir))
	}
	code := m.Run()
	cleanupSharedManaged()
	os.Exit(code)
}

// helperMain is a second launcher-like process for the managed swtpm
// tests: it opens swtpm:DIR and prints the daemon pid, the EK's hash and
// PCR 16, then optionally extends PCR 16.
func helperMain(dir string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tp, err := Open(ctx, "swtpm:"+dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer tp.Close()
	ek, err := tp.EKPublic(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pcrs, err := tp.ReadPCRs(ctx, 16)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	h := sha256.Sum256(ek)
	fmt.Printf("%d %x %x\n", tp.Managed().PID, h, pcrs[16])
	return 0
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func needSwtpm(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no external processes (swtpm)")
	}
	for _, tool := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: apt-get install swtpm swtpm-tools", tool)
		}
	}
}

// managedFixture is one managed swtpm shared by the tests of this package
// (swtpm_setup takes seconds); it lives in a temporary directory and is
// stopped when the tests end.
var managedFixture struct {
	once sync.Once
	dir  string
	err  error
}

func sharedManaged(t *testing.T) string {
	t.Helper()
	needSwtpm(t)
	managedFixture.once.Do(func() {
		dir, err := os.MkdirTemp("", "bulwark-tpm-test-")
		if err != nil {
			managedFixture.err = err
			return
		}
		managedFixture.dir = dir
		_, managedFixture.err = StartManaged(context.Background(), dir, nil)
	})
	if managedFixture.err != nil {
		t.Fatalf("starting managed swtpm: %v", managedFixture.err)
	}
	return managedFixture.dir
}

func cleanupSharedManaged() {
	if managedFixture.dir != "" {
		_ = StopManaged(managedFixture.dir)
		_ = os.RemoveAll(managedFixture.dir)
	}
}

// eachTPM runs f against the in-process simulator and a real swtpm.
func eachTPM(t *testing.T, f func(t *testing.T, tp *TPM)) {
	t.Run("sim", func(t *testing.T) {
		if !simulatorAvailable {
			t.Skip("the in-process simulator needs cgo: build with CGO_ENABLED=1 and apt-get install libssl-dev")
		}
		tp, err := Open(ctxT(t), "sim")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tp.Close() })
		f(t, tp)
	})
	t.Run("device", func(t *testing.T) {
		// A hardware TPM is changed by these tests (PCR 13/16/23 extended,
		// keys persisted at Bulwark's handles): opt in explicitly.
		if _, err := os.Stat(DefaultDevice); err != nil {
			t.Skipf("no %s: no hardware TPM on this machine", DefaultDevice)
		}
		if os.Getenv("BULWARK_TEST_HW_TPM") != "1" {
			t.Skipf("%s present; set BULWARK_TEST_HW_TPM=1 to run tests that extend its PCRs and persist keys", DefaultDevice)
		}
		tp, err := Open(ctxT(t), DefaultDevice)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tp.Close() })
		f(t, tp)
	})
	t.Run("swtpm", func(t *testing.T) {
		dir := sharedManaged(t)
		tp, err := Open(ctxT(t), "swtpm:"+dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tp.Close() })
		f(t, tp)
	})
}

func extendExpected(old []byte, digests ...[]byte) []byte {
	v := old
	for _, d := range digests {
		h := sha256.Sum256(append(bytes.Clone(v), d...))
		v = h[:]
	}
	return v
}

func TestPCRExtendAndRead(t *testing.T) {
	eachTPM(t, func(t *testing.T, tp *TPM) {
		ctx := ctxT(t)
		before, err := tp.ReadPCRs(ctx, 0, 13, 16, 23)
		if err != nil {
			t.Fatal(err)
		}
		if len(before) != 4 {
			t.Fatalf("read %d PCRs, want 4", len(before))
		}
		d1, d2 := sha256.Sum256([]byte("one")), sha256.Sum256([]byte("two"))
		for _, d := range [][]byte{d1[:], d2[:]} {
			if err := tp.Extend(ctx, 13, d); err != nil {
				t.Fatal(err)
			}
		}
		after, err := tp.ReadPCRs(ctx, 13, 0)
		if err != nil {
			t.Fatal(err)
		}
		if want := extendExpected(before[13], d1[:], d2[:]); !bytes.Equal(after[13], want) {
			t.Fatalf("PCR 13 = %x, want %x", after[13], want)
		}
		if !bytes.Equal(after[0], before[0]) {
			t.Fatal("PCR 0 changed")
		}
		if err := tp.Extend(ctx, 13, d1[:20]); err == nil {
			t.Fatal("extend with a 20-byte digest succeeded")
		}
		if _, err := tp.ReadPCRs(ctx, 24); err == nil {
			t.Fatal("reading PCR 24 succeeded")
		}
		// More than 8 PCRs need several TPM2_PCR_Read calls.
		all := make([]int, 24)
		for i := range all {
			all[i] = i
		}
		vals, err := tp.ReadPCRs(ctx, all...)
		if err != nil || len(vals) != 24 {
			t.Fatalf("reading 24 PCRs: %d values, %v", len(vals), err)
		}
	})
}

func TestEK(t *testing.T) {
	eachTPM(t, func(t *testing.T, tp *TPM) {
		ctx := ctxT(t)
		ek, err := tp.EKPublic(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verify.ParseEKPublic(ek); err != nil {
			t.Fatal(err)
		}
		ek2, err := tp.EKPublic(ctx)
		if err != nil || !bytes.Equal(ek, ek2) {
			t.Fatalf("EK not stable: %v", err)
		}
		cert, err := tp.EKCertificate(ctx)
		if tp.Spec().Kind == KindSimulator {
			if !errors.Is(err, ErrNoEKCert) {
				t.Fatalf("simulator EK certificate: %v, want ErrNoEKCert", err)
			}
			return
		}
		if errors.Is(err, ErrNoEKCert) && tp.Spec().Kind == KindDevice {
			t.Skip("this hardware TPM has no RSA EK certificate in NV")
		}
		if err != nil {
			t.Fatal(err)
		}
		if tp.Managed() == nil {
			// A hardware TPM: its manufacturer's CA is not known here; check
			// the certificate at least certifies this EK.
			c, err := x509.ParseCertificate(cert)
			if err != nil {
				t.Fatalf("EK certificate: %v", err)
			}
			p, _ := verify.ParseEKPublic(ek)
			if !c.PublicKey.(*rsa.PublicKey).Equal(p.Key) {
				t.Fatal("EK certificate does not certify the EK")
			}
			return
		}
		roots, inter := managedPools(t, tp.Managed().Dir)
		info, err := verify.VerifyEKCertificate(cert, ek, verify.EKCertOptions{Roots: roots, Intermediates: inter})
		if err != nil {
			t.Fatal(err)
		}
		if info.Model != "swtpm" || info.Manufacturer == "" || len(info.Chain) != 3 {
			t.Fatalf("EK cert info: %+v, chain %d", info, len(info.Chain))
		}
		// The certificate does not certify another EK.
		other := otherEK(t)
		if _, err := verify.VerifyEKCertificate(cert, other, verify.EKCertOptions{Roots: roots, Intermediates: inter}); !errors.Is(err, verify.ErrEKCert) {
			t.Fatalf("cert accepted for another EK: %v", err)
		}
		// Without the intermediate, or with another root, the chain fails.
		if _, err := verify.VerifyEKCertificate(cert, ek, verify.EKCertOptions{Roots: roots}); err == nil {
			t.Fatal("verified without the intermediate")
		}
		if _, err := verify.VerifyEKCertificate(cert, ek, verify.EKCertOptions{Roots: inter}); err != nil {
			t.Logf("intermediate as root: %v", err) // acceptable either way: it is a CA
		}
		if _, err := verify.VerifyEKCertificate(cert, ek, verify.EKCertOptions{Roots: x509.NewCertPool(), Intermediates: inter}); err == nil {
			t.Fatal("verified with an empty root pool")
		}
	})
}

func managedPools(t *testing.T, dir string) (roots, inter *x509.CertPool) {
	t.Helper()
	rootPath, interPath := ManagedCA(dir)
	load := func(p string) *x509.CertPool {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(c)
		return pool
	}
	return load(rootPath), load(interPath)
}

// otherEK is an EK-shaped public area of a key no TPM here holds.
func otherEK(t *testing.T) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := tpm2.RSAEKTemplate
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
	return tpm2.Marshal(tmpl)
}

func TestCredentialActivation(t *testing.T) {
	eachTPM(t, func(t *testing.T, tp *TPM) {
		ctx := ctxT(t)
		ak, err := tp.AK(ctx)
		if err != nil {
			t.Fatal(err)
		}
		akp, err := verify.ParseAKPublic(ak.Public)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(akp.Name, ak.Name) {
			t.Fatalf("verifier's AK name %x != TPM's %x", akp.Name, ak.Name)
		}
		ek, err := tp.EKPublic(ctx)
		if err != nil {
			t.Fatal(err)
		}
		secret := make([]byte, 32)
		rand.Read(secret)
		blob, enc, err := verify.MakeCredential(ek, akp.Name, secret)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tp.ActivateCredential(ctx, blob, enc)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, secret) {
			t.Fatalf("activated %x, want %x", got, secret)
		}

		// Bound to another key's name: the TPM refuses.
		signer, err := tp.Signer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = signer
		wrongName := bytes.Clone(akp.Name)
		wrongName[5] ^= 0xff
		blob, enc, err = verify.MakeCredential(ek, wrongName, secret)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tp.ActivateCredential(ctx, blob, enc); err == nil {
			t.Fatalf("activation for another AK name succeeded: %x", got)
		}
		// Encrypted to another EK: the TPM cannot open it.
		blob, enc, err = verify.MakeCredential(otherEK(t), akp.Name, secret)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tp.ActivateCredential(ctx, blob, enc); err == nil {
			t.Fatalf("activation of another EK's credential succeeded: %x", got)
		}
		// Tampered blob.
		blob, enc, _ = verify.MakeCredential(ek, akp.Name, secret)
		blob[len(blob)-1] ^= 1
		if _, err := tp.ActivateCredential(ctx, blob, enc); err == nil {
			t.Fatal("activation of a tampered credential succeeded")
		}
	})
}

func TestQuote(t *testing.T) {
	eachTPM(t, func(t *testing.T, tp *TPM) {
		ctx := ctxT(t)
		ak, err := tp.AK(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d := sha256.Sum256([]byte("launch event"))
		if err := tp.Extend(ctx, limits.DefaultLaunchPCR, d[:]); err != nil {
			t.Fatal(err)
		}
		nonce := make([]byte, 32)
		rand.Read(nonce)
		pcrs := []int{0, 7, limits.DefaultLaunchPCR}
		q, err := tp.Quote(ctx, pcrs, nonce)
		if err != nil {
			t.Fatal(err)
		}
		res, err := verify.VerifyQuote(ak.Public, q.Quoted, q.Signature, nonce, q.PCRs)
		if err != nil {
			t.Fatal(err)
		}
		now, _ := tp.ReadPCRs(ctx, limits.DefaultLaunchPCR)
		if !bytes.Equal(res.PCRs()[limits.DefaultLaunchPCR], now[limits.DefaultLaunchPCR]) {
			t.Fatal("verified launch PCR differs from the TPM's")
		}
		// A second quote of this boot has the same reset count.
		q2, err := tp.Quote(ctx, pcrs, nonce)
		if err != nil {
			t.Fatal(err)
		}
		res2, err := verify.VerifyQuote(ak.Public, q2.Quoted, q2.Signature, nonce, q2.PCRs)
		if err != nil {
			t.Fatal(err)
		}
		if res2.Clock().ResetCount != res.Clock().ResetCount || res2.Clock().Clock < res.Clock().Clock {
			t.Fatalf("clock went from %+v to %+v", res.Clock(), res2.Clock())
		}

		rsaAK, rsaQuoted, rsaSig := rsaQuote(t, tp, pcrs, nonce)
		if _, err := verify.VerifyQuote(rsaAK, rsaQuoted, rsaSig, nonce, q.PCRs); err != nil {
			t.Fatalf("RSA AK quote from the TPM: %v", err)
		}
		otherSig := signWith(t, tp, q.Quoted)
		// A quote over the same PCRs with a fresh nonce: its bytes differ from
		// q's whatever the TPM clock did (two quotes with one nonce inside one
		// clock tick are byte-identical, and q's signature would be right).
		otherNonce := bytes.Clone(nonce)
		otherNonce[len(otherNonce)-1] ^= 0xff
		q3, err := tp.Quote(ctx, pcrs, otherNonce)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(q3.Quoted, q.Quoted) {
			t.Fatal("two quotes with different nonces are byte-identical")
		}

		tamperedPCRs := map[int][]byte{}
		for k, v := range q.PCRs {
			tamperedPCRs[k] = v
		}
		tamperedPCRs[limits.DefaultLaunchPCR] = bytes.Repeat([]byte{1}, 32)
		tamperedQuote := bytes.Clone(q.Quoted)
		tamperedQuote[len(tamperedQuote)-3] ^= 0x40
		wrongNonce := bytes.Clone(nonce)
		wrongNonce[0] ^= 1
		subset := map[int][]byte{0: q.PCRs[0], 7: q.PCRs[7]}

		cases := []struct {
			name            string
			ak, quoted, sig []byte
			nonce           []byte
			pcrs            map[int][]byte
		}{
			{"wrong nonce", ak.Public, q.Quoted, q.Signature, wrongNonce, q.PCRs},
			{"tampered PCR value", ak.Public, q.Quoted, q.Signature, nonce, tamperedPCRs},
			{"PCR subset", ak.Public, q.Quoted, q.Signature, nonce, subset},
			{"tampered attest", ak.Public, tamperedQuote, q.Signature, nonce, q.PCRs},
			{"signature by another key", ak.Public, q.Quoted, otherSig, nonce, q.PCRs},
			{"RSA AK, ECC signature", rsaAK, q.Quoted, q.Signature, nonce, q.PCRs},
			{"ECC AK, RSA signature", ak.Public, rsaQuoted, rsaSig, nonce, q.PCRs},
			{"signature of another quote", ak.Public, q3.Quoted, q.Signature, otherNonce, q3.PCRs},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				if _, err := verify.VerifyQuote(c.ak, c.quoted, c.sig, c.nonce, c.pcrs); !errors.Is(err, verify.ErrQuote) {
					t.Fatalf("VerifyQuote = %v, want ErrQuote", err)
				}
			})
		}
		if _, err := tp.Quote(ctx, pcrs, nonce[:4]); err == nil {
			t.Fatal("quote with a 4-byte nonce succeeded")
		}
	})
}

// rsaQuote makes a quote with a transient restricted RSA signing key in the
// same TPM, to check the verifier's RSA path and the type mismatch checks.
func rsaQuote(t *testing.T, tp *TPM, pcrs []int, nonce []byte) (pub, quoted, sig []byte) {
	t.Helper()
	tmpl := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, Restricted: true, SignEncrypt: true, NoDA: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSASSA, Details: tpm2.NewTPMUAsymScheme(
				tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256})},
			KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
	}
	err := tp.do(ctxT(t), func(x transport.TPM) error {
		k, err := createPrimary(x, tpm2.TPMRHOwner, tmpl)
		if err != nil {
			return err
		}
		defer k.flush()
		rsp, err := tpm2.Quote{
			SignHandle: k.auth(), QualifyingData: tpm2.TPM2BData{Buffer: nonce},
			InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull}, PCRSelect: selection(pcrs),
		}.Execute(x)
		if err != nil {
			return err
		}
		pub, quoted, sig = bytes.Clone(k.raw), bytes.Clone(rsp.Quoted.Bytes()), tpm2.Marshal(rsp.Signature)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pub, quoted, sig
}

// signWith has a second ECC P-256 key of the same TPM sign data as a
// quote signature (TPMT_SIGNATURE) would be.
func signWith(t *testing.T, tp *TPM, data []byte) []byte {
	t.Helper()
	s, err := tp.Signer(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(data)
	der, err := s.Sign(nil, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &rs); err != nil {
		t.Fatal(err)
	}
	return tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(
		tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{Hash: tpm2.TPMAlgSHA256,
			SignatureR: tpm2.TPM2BECCParameter{Buffer: rs.R.Bytes()},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: rs.S.Bytes()}})})
}

func TestSealUnseal(t *testing.T) {
	eachTPM(t, func(t *testing.T, tp *TPM) {
		ctx := ctxT(t)
		secret := []byte("vault master key: 0123456789abcdef")
		blob, err := tp.Seal(ctx, secret, []int{7, 16})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(blob, secret) {
			t.Fatal("sealed blob contains the secret")
		}
		got, err := tp.Unseal(ctx, blob)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, secret) {
			t.Fatalf("unsealed %q", got)
		}
		// Sealing to values the PCRs do not hold cannot be opened.
		wrong, err := tp.SealTo(ctx, secret, map[int][]byte{16: make([]byte, 32), 7: bytes.Repeat([]byte{7}, 32)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tp.Unseal(ctx, wrong); !errors.Is(err, ErrPCRMismatch) {
			t.Fatalf("unseal to other values: %v, want ErrPCRMismatch", err)
		}
		d := sha256.Sum256([]byte("changed"))
		if err := tp.Extend(ctx, 16, d[:]); err != nil {
			t.Fatal(err)
		}
		if got, err := tp.Unseal(ctx, blob); !errors.Is(err, ErrPCRMismatch) {
			t.Fatalf("unseal after PCR change = %q, %v; want ErrPCRMismatch", got, err)
		}
		for name, b := range map[string][]byte{
			"empty": nil, "magic only": sealMagic, "truncated": blob[:len(blob)-5],
			"trailing": append(bytes.Clone(blob), 0), "bad pcr": append(append(bytes.Clone(sealMagic), 1, 99), blob[len(sealMagic)+3:]...),
		} {
			if _, err := tp.Unseal(ctx, b); err == nil {
				t.Errorf("unseal of %s blob succeeded", name)
			}
		}
		tampered := bytes.Clone(blob)
		tampered[len(tampered)-10] ^= 1
		if _, err := tp.Unseal(ctx, tampered); err == nil {
			t.Error("unseal of a tampered blob succeeded")
		}
		if _, err := tp.Seal(ctx, make([]byte, MaxSealSize+1), []int{16}); err == nil {
			t.Error("sealed an oversized secret")
		}
	})
}

func TestSigner(t *testing.T) {
	eachTPM(t, func(t *testing.T, tp *TPM) {
		ctx := ctxT(t)
		s, err := tp.Signer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pub := s.Public().(*ecdsa.PublicKey)
		d := sha256.Sum256([]byte("artifact"))
		sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(pub, d[:], sig) {
			t.Fatal("signature does not verify with ecdsa.VerifyASN1")
		}
		wrong := sha256.Sum256([]byte("other"))
		if ecdsa.VerifyASN1(pub, wrong[:], sig) {
			t.Fatal("signature verifies for another digest")
		}
		d384 := sha512.Sum384([]byte("artifact"))
		sig, err = s.Sign(rand.Reader, d384[:], crypto.SHA384)
		if err != nil || !ecdsa.VerifyASN1(pub, d384[:], sig) {
			t.Fatalf("SHA-384 signature: %v", err)
		}
		if _, err := s.Sign(rand.Reader, d[:20], crypto.SHA256); err == nil {
			t.Fatal("signed a short digest")
		}
		// The key is persistent: a second Signer is the same key.
		s2, err := tp.Signer(ctx)
		if err != nil || !pub.Equal(s2.Public()) {
			t.Fatalf("second signer differs: %v", err)
		}
		ak, _ := tp.AK(ctx)
		akp, _ := verify.ParseAKPublic(ak.Public)
		if akp.Key.(*ecdsa.PublicKey).Equal(pub) {
			t.Fatal("signer and AK are the same key")
		}
	})
}

func TestAKLifecycle(t *testing.T) {
	if !simulatorAvailable {
		t.Skip("needs the in-process simulator (cgo)")
	}
	ctx := ctxT(t)
	tp, err := Open(ctx, "sim") // a freshly manufactured TPM
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if _, err := tp.LoadAK(ctx); !errors.Is(err, ErrNoAK) {
		t.Fatalf("LoadAK on a fresh TPM: %v, want ErrNoAK", err)
	}
	nonce := bytes.Repeat([]byte{9}, 16)
	if _, err := tp.ActivateCredential(ctx, []byte{1}, []byte{1}); !errors.Is(err, ErrNoAK) {
		t.Fatalf("ActivateCredential without AK: %v", err)
	}
	ak, err := tp.AK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ak2, err := tp.LoadAK(ctx)
	if err != nil || !bytes.Equal(ak.Public, ak2.Public) {
		t.Fatalf("LoadAK after AK: %v", err)
	}
	// A foreign key at the AK handle is refused, not used or replaced.
	err = tp.do(ctx, func(x transport.TPM) error {
		_, err := tpm2.EvictControl{
			Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			ObjectHandle:     tpm2.NamedHandle{Handle: tpm2.TPMHandle(AKHandle), Name: tpm2.TPM2BName{Buffer: ak.Name}},
			PersistentHandle: tpm2.TPMHandle(AKHandle),
		}.Execute(x)
		if err != nil {
			return err
		}
		k, err := createPrimary(x, tpm2.TPMRHOwner, signerTemplate)
		if err != nil {
			return err
		}
		defer k.flush()
		_, err = tpm2.EvictControl{
			Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			ObjectHandle:     &tpm2.NamedHandle{Handle: k.handle, Name: k.name},
			PersistentHandle: tpm2.TPMHandle(AKHandle),
		}.Execute(x)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.AK(ctx); !errors.Is(err, ErrHandleInUse) {
		t.Fatalf("AK with a foreign key at its handle: %v, want ErrHandleInUse", err)
	}
	if _, err := tp.Quote(ctx, []int{0}, nonce); !errors.Is(err, ErrHandleInUse) {
		t.Fatalf("Quote with a foreign key at the AK handle: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	dir := sharedManaged(t)
	ctx := ctxT(t)
	tp, err := Open(ctx, "swtpm:"+dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			nonce := bytes.Repeat([]byte{byte(i + 1)}, 16)
			for j := 0; j < 3; j++ {
				if _, err := tp.Quote(ctx, []int{limits.DefaultLaunchPCR}, nonce); err != nil {
					errs <- err
					return
				}
				d := sha256.Sum256([]byte{byte(i), byte(j)})
				if err := tp.Extend(ctx, 23, d[:]); err != nil {
					errs <- err
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCancelledContext(t *testing.T) {
	dir := sharedManaged(t)
	tp, err := Open(ctxT(t), "swtpm:"+dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tp.ReadPCRs(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadPCRs with a cancelled context: %v", err)
	}
	tp.Close()
	if _, err := tp.ReadPCRs(ctxT(t), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadPCRs after Close: %v", err)
	}
}

var update = flag.Bool("update", false, "regenerate tpm/verify/testdata/swtpm-evidence.json from a fresh managed swtpm")

// TestWriteSwtpmEvidence records real evidence from swtpm (EK, EK
// certificate chain, AK, a quote) for tpm/verify's tests, which run
// without a TPM. Run with -update to regenerate.
func TestWriteSwtpmEvidence(t *testing.T) {
	if !*update {
		t.Skip("run with -update to regenerate the verifier's swtpm evidence")
	}
	dir := filepath.Join(t.TempDir(), "swtpm")
	t.Cleanup(func() { _ = StopManaged(dir) })
	ctx := ctxT(t)
	tp, err := Open(ctx, "swtpm:"+dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	for _, s := range []string{"kernel", "initrd", "image"} {
		d := sha256.Sum256([]byte(s))
		if err := tp.Extend(ctx, limits.DefaultLaunchPCR, d[:]); err != nil {
			t.Fatal(err)
		}
	}
	ek, _ := tp.EKPublic(ctx)
	cert, err := tp.EKCertificate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tp.AK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nonce := sha256.Sum256([]byte("bulwark test nonce"))
	q, err := tp.Quote(ctx, []int{0, 7, limits.DefaultLaunchPCR}, nonce[:])
	if err != nil {
		t.Fatal(err)
	}
	res, err := verify.VerifyQuote(ak.Public, q.Quoted, q.Signature, nonce[:], q.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	root, inter := ManagedCA(dir)
	rootPEM, _ := os.ReadFile(root)
	interPEM, _ := os.ReadFile(inter)
	pcrs := map[string]string{}
	for i, v := range q.PCRs {
		pcrs[strconv.Itoa(i)] = hex.EncodeToString(v)
	}
	ev := map[string]any{
		"comment":             "Real evidence from swtpm 0.7 (managed, swtpm_localca CA); regenerate: go test ./tpm -run TestWriteSwtpmEvidence -update",
		"ek_public":           hex.EncodeToString(ek),
		"ek_certificate":      hex.EncodeToString(cert),
		"ca_root_pem":         string(rootPEM),
		"ca_intermediate_pem": string(interPEM),
		"ak_public":           hex.EncodeToString(ak.Public),
		"nonce":               hex.EncodeToString(nonce[:]),
		"quoted":              hex.EncodeToString(q.Quoted),
		"signature":           hex.EncodeToString(q.Signature),
		"pcrs":                pcrs,
		"expected": map[string]any{
			"ak_name":       hex.EncodeToString(ak.Name),
			"reset_count":   res.Clock().ResetCount,
			"restart_count": res.Clock().RestartCount,
			"launch_pcr":    hex.EncodeToString(extendExpected(make([]byte, 32), sha256Of("kernel"), sha256Of("initrd"), sha256Of("image"))),
		},
	}
	b, err := json.MarshalIndent(ev, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join("verify", "testdata", "swtpm-evidence.json")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func sha256Of(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// TestQuoteNonceSize: Quote takes exactly the nonces the verifier and the
// store accept (limits.CheckNonceSize). It once took 8..15 bytes, which
// tpm/verify accepted too but the store refused.
func TestQuoteNonceSize(t *testing.T) {
	if !simulatorAvailable {
		t.Skip("needs the in-process simulator (cgo)")
	}
	ctx := ctxT(t)
	tp, err := Open(ctx, "sim")
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	for _, tc := range []struct {
		size int
		ok   bool
	}{
		{0, false},
		{8, false},
		{limits.MinNonceSize - 1, false},
		{limits.MinNonceSize, true},
		{limits.MaxNonceSize, true},
		{limits.MaxNonceSize + 1, false},
	} {
		nonce := bytes.Repeat([]byte{7}, tc.size)
		q, err := tp.Quote(ctx, []int{limits.DefaultLaunchPCR}, nonce)
		if (err == nil) != tc.ok {
			t.Errorf("Quote with a %d-byte nonce: %v, want ok %v", tc.size, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("nonce of %d bytes", tc.size)) {
			t.Errorf("Quote with a %d-byte nonce: %v, want it to name the size", tc.size, err)
		}
		if err == nil && len(q.Quoted) == 0 {
			t.Errorf("Quote with a %d-byte nonce: empty quote", tc.size)
		}
	}
}
