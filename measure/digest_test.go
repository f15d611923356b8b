package measure

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func writeTemp(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// toolDigest computes a file digest with an independent tool (coreutils).
func toolDigest(t testing.TB, a Alg, path string) string {
	t.Helper()
	tool := a.String() + "sum"
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s not found: apt-get install coreutils", tool)
	}
	out, err := exec.Command(tool, path).Output()
	if err != nil {
		t.Fatal(err)
	}
	return a.String() + ":" + strings.Fields(string(out))[0]
}

func TestDigestFileMatchesCoreutils(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
		alg  Alg
	}{
		{"empty sha256", 0, SHA256},
		{"one byte", 1, SHA256},
		{"buffer boundary", bufSize, SHA256},
		{"buffer boundary+1", bufSize + 1, SHA384},
		{"3 MiB sha384", 3<<20 + 17, SHA384},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeTemp(t, "blob", randBytes(t, tc.size))
			got, n, err := DigestFile(context.Background(), p, tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			if want := toolDigest(t, tc.alg, p); got != want || n != int64(tc.size) {
				t.Fatalf("DigestFile = %s (%d bytes), %s says %s (%d)", got, n, tc.alg, want, tc.size)
			}
		})
	}
}

func TestDigestFileErrors(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := writeTemp(t, "f", []byte("x"))
	for _, tc := range []struct {
		name, path, want string
		ctx              context.Context
		alg              Alg
	}{
		{"missing", filepath.Join(dir, "nope"), "no such file", context.Background(), SHA256},
		{"directory", dir, "not a regular file", context.Background(), SHA256},
		{"bad alg", p, "invalid digest algorithm", context.Background(), 0},
		{"cancelled", p, "canceled", ctx, SHA256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := DigestFile(tc.ctx, tc.path, tc.alg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestParseDigest(t *testing.T) {
	h64 := strings.Repeat("ab", 32)
	h96 := strings.Repeat("cd", 48)
	for _, tc := range []struct {
		in   string
		alg  Alg
		fail bool
	}{
		{"sha256:" + h64, SHA256, false},
		{"sha384:" + h96, SHA384, false},
		{"sha256:" + strings.ToUpper(h64), 0, true},
		{"sha256:" + h96, 0, true},
		{"sha512:" + h64, 0, true},
		{h64, 0, true},
		{"", 0, true},
		{"sha256:" + h64[:63] + "g", 0, true},
		{"sha256:" + h64 + "\n", 0, true},
	} {
		a, sum, err := ParseDigest(tc.in)
		if tc.fail != (err != nil) || (!tc.fail && (a != tc.alg || FormatDigest(a, sum) != tc.in)) {
			t.Errorf("ParseDigest(%q) = %v, %x, %v", tc.in, a, sum, err)
		}
	}
}

func TestDigestCmdlineIsExactBytes(t *testing.T) {
	p := writeTemp(t, "cmdline", []byte("console=ttyS0 panic=-1"))
	want := toolDigest(t, SHA256, p)
	if got := DigestCmdline(SHA256, "console=ttyS0 panic=-1"); got != want {
		t.Fatalf("got %s want %s", got, want)
	}
	if DigestCmdline(SHA256, "a ") == DigestCmdline(SHA256, "a") {
		t.Fatal("trailing space ignored")
	}
}

func TestParseAlg(t *testing.T) {
	for in, want := range map[string]Alg{"": SHA256, "sha256": SHA256, "SHA384": SHA384} {
		if a, err := ParseAlg(in); err != nil || a != want {
			t.Errorf("ParseAlg(%q) = %v, %v", in, a, err)
		}
	}
	if _, err := ParseAlg("md5"); err == nil {
		t.Error("md5 accepted")
	}
}

func TestDigestReaderReportsReadErrors(t *testing.T) {
	boom := errors.New("boom")
	_, _, err := DigestReader(context.Background(), &errReader{data: bytes.NewReader([]byte("abc")), err: boom}, SHA256)
	if !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
}

type errReader struct {
	data *bytes.Reader
	err  error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, _ := e.data.Read(p)
	if n == 0 {
		return 0, e.err
	}
	return n, nil
}

func FuzzParseDigest(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("0", 64))
	f.Add("sha384:" + strings.Repeat("f", 96))
	f.Add("sha256:")
	f.Add(":")
	f.Fuzz(func(t *testing.T, s string) {
		a, sum, err := ParseDigest(s)
		if err != nil {
			return
		}
		// One spelling per digest: what parses formats back to itself.
		if FormatDigest(a, sum) != s || len(sum) != a.Size() {
			t.Fatalf("%q parsed to %v %x", s, a, sum)
		}
	})
}
