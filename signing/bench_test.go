package signing

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"testing"
	"time"
)

// BenchmarkVerifyDigest measures VerifyDigest (what attestd calls for every
// artifact signature it checks) and, in the same run, the bare standard
// library ECDSA verification it wraps, reporting the ratio as
// "x-stdlib" (1.0 = no overhead).
func BenchmarkVerifyDigest(b *testing.B) {
	s := fuzzKey(b)
	sum := sha256.Sum256([]byte("launch event"))
	sig, err := s.SignDigest(sum[:])
	if err != nil {
		b.Fatal(err)
	}
	pub := s.Public().(*ecdsa.PublicKey)

	// The baseline is timed before and after the measured loop and
	// averaged, so load changes on a shared machine hit both sides.
	timeBaseline := func() time.Duration {
		const n = 100
		start := time.Now()
		for range n {
			if !ecdsa.VerifyASN1(pub, sum[:], sig) {
				b.Fatal("baseline does not verify")
			}
		}
		return time.Since(start) / n
	}
	before := timeBaseline()

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := VerifyDigest(pub, sum[:], sig); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	baseline := (before + timeBaseline()) / 2
	perOp := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(baseline.Nanoseconds()), "stdlib-ns/op")
	if baseline > 0 {
		b.ReportMetric(float64(perOp)/float64(baseline), "x-stdlib")
	}
}
