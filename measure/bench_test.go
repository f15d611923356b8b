package measure

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// BenchmarkMeasureFileVsOpenSSL hashes a 256 MiB file with DigestFile and,
// in the same run, with `openssl dgst -sha256` as the baseline. It reports
// both throughputs and their ratio (the target is ratio-vs-openssl >= 0.9).
// The file is read from the page cache in both cases (it was just written).
func BenchmarkMeasureFileVsOpenSSL(b *testing.B) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		b.Skip("openssl not found: apt-get install openssl")
	}
	const size = 256 << 20
	p := filepath.Join(b.TempDir(), "blob")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	chunk := randBytes(b, 1<<20)
	for i := 0; i < size>>20; i++ {
		f.Write(chunk)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	// Warm the page cache and check both agree.
	want, _, err := DigestFile(ctx, p, SHA256)
	if err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command(openssl, "dgst", "-sha256", "-r", p).Output(); err != nil || "sha256:"+string(out[:64]) != want {
		b.Fatalf("openssl disagrees: %s %v", out, err)
	}
	var ours, theirs time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Interleave so both see the same machine load.
		t0 := time.Now()
		if _, _, err := DigestFile(ctx, p, SHA256); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(t0)
		b.StopTimer()
		t0 = time.Now()
		if err := exec.Command(openssl, "dgst", "-sha256", p).Run(); err != nil {
			b.Fatal(err)
		}
		theirs += time.Since(t0)
		b.StartTimer()
	}
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(ours), "MB/s")
	b.ReportMetric(mbps(theirs), "openssl-MB/s")
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "ratio-vs-openssl")
}

// BenchmarkMeasureImageParallel opens (verifies) an 8-layer image with one
// worker and with GOMAXPROCS workers and reports the speedup.
func BenchmarkMeasureImageParallel(b *testing.B) {
	layers := 8
	if testing.Short() {
		layers = 4
	}
	dir := writeLayout(b, testImage(b, 16<<20, layers, "linux/amd64"))
	ctx := context.Background()
	im, err := OpenImage(ctx, dir, ImageOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for _, l := range im.Layers {
		total += l.Size
	}
	im.Close()
	var serial, parallel time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, w := range []int{1, 0} {
			t0 := time.Now()
			im, err := OpenImage(ctx, dir, ImageOptions{Workers: w})
			if err != nil {
				b.Fatal(err)
			}
			im.Close()
			if w == 1 {
				serial += time.Since(t0)
			} else {
				parallel += time.Since(t0)
			}
		}
	}
	mbps := func(d time.Duration) float64 { return float64(total) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(parallel), "parallel-MB/s")
	b.ReportMetric(mbps(serial), "serial-MB/s")
	b.ReportMetric(serial.Seconds()/parallel.Seconds(), "speedup")
	b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "cores")
}
