package tpm

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/tpm/limits"
	"github.com/bulwark-project/bulwark/tpm/verify"
)

// BenchmarkQuote measures a quote on the in-process simulator (AK lookup,
// TPM2_Quote, PCR read-back and the self-check), against a baseline
// measured in the same run: a bare PCR read, the cheapest TPM round trip.
func BenchmarkQuote(b *testing.B) {
	if !simulatorAvailable {
		b.Skip("needs the in-process simulator (cgo)")
	}
	ctx := context.Background()
	tp, err := Open(ctx, "sim")
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	if _, err := tp.AK(ctx); err != nil {
		b.Fatal(err)
	}
	pcrs := []int{0, 7, limits.DefaultLaunchPCR}
	nonce := bytes.Repeat([]byte{7}, 32)
	const baseN = 200
	start := time.Now()
	for range baseN {
		if _, err := tp.ReadPCRs(ctx, pcrs...); err != nil {
			b.Fatal(err)
		}
	}
	base := time.Since(start) / baseN
	b.ResetTimer()
	for b.Loop() {
		if _, err := tp.Quote(ctx, pcrs, nonce); err != nil {
			b.Fatal(err)
		}
	}
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(base.Nanoseconds()), "pcrread-ns/op")
	b.ReportMetric(float64(per)/float64(base), "x-pcrread")
}

// BenchmarkQuoteVerify is the verifier's cost on a real (simulator) quote,
// next to the synthetic one in tpm/verify's BenchmarkVerifyQuote.
func BenchmarkQuoteVerify(b *testing.B) {
	if !simulatorAvailable {
		b.Skip("needs the in-process simulator (cgo)")
	}
	ctx := context.Background()
	tp, err := Open(ctx, "sim")
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	ak, err := tp.AK(ctx)
	if err != nil {
		b.Fatal(err)
	}
	nonce := bytes.Repeat([]byte{7}, 32)
	q, err := tp.Quote(ctx, []int{0, 7, limits.DefaultLaunchPCR}, nonce)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := verify.VerifyQuote(ak.Public, q.Quoted, q.Signature, nonce, q.PCRs); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzDecodeSealed(f *testing.F) {
	f.Add(encodeSealed([]int{7, 16}, bytes.Repeat([]byte{1}, 80), bytes.Repeat([]byte{2}, 120)))
	f.Add(sealMagic)
	f.Fuzz(func(t *testing.T, b []byte) {
		pcrs, pub, priv, err := decodeSealed(b)
		if err != nil {
			return
		}
		if len(pcrs) == 0 || len(pub) == 0 || len(priv) == 0 {
			t.Fatal("decoded an empty field")
		}
		if !bytes.Equal(encodeSealed(pcrs, pub, priv), b) {
			t.Fatal("decode/encode is not the identity")
		}
	})
}
