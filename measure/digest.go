package measure

import (
	"context"
	"crypto"
	_ "crypto/sha256" // registers SHA-256 for crypto.Hash
	_ "crypto/sha512" // registers SHA-384 for crypto.Hash
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
)

// Alg is a digest algorithm. The zero value is invalid; use SHA256 (the
// default everywhere) or SHA384.
type Alg uint8

// The supported digest algorithms.
const (
	SHA256 Alg = 1
	SHA384 Alg = 2
)

// DefaultAlg is the algorithm used when none is chosen.
const DefaultAlg = SHA256

// ParseAlg parses "sha256" or "sha384" (case-insensitive); "" means DefaultAlg.
func ParseAlg(s string) (Alg, error) {
	switch strings.ToLower(s) {
	case "", "sha256", "sha-256":
		return SHA256, nil
	case "sha384", "sha-384":
		return SHA384, nil
	}
	return 0, fmt.Errorf("unsupported digest algorithm %q (want sha256 or sha384)", s)
}

// String returns "sha256" or "sha384", the prefix of a digest string.
func (a Alg) String() string {
	switch a {
	case SHA256:
		return "sha256"
	case SHA384:
		return "sha384"
	}
	return fmt.Sprintf("alg(%d)", uint8(a))
}

// Valid reports whether a is a supported algorithm.
func (a Alg) Valid() bool { return a == SHA256 || a == SHA384 }

// Hash returns the crypto.Hash of a (0 if a is invalid).
func (a Alg) Hash() crypto.Hash {
	switch a {
	case SHA256:
		return crypto.SHA256
	case SHA384:
		return crypto.SHA384
	}
	return 0
}

// Size is the digest length in bytes (0 if a is invalid).
func (a Alg) Size() int {
	if !a.Valid() {
		return 0
	}
	return a.Hash().Size()
}

// New returns a new hash.Hash for a. It panics if a is invalid (a
// programming error: validate algorithms where they enter).
func (a Alg) New() hash.Hash {
	if !a.Valid() {
		panic("measure: invalid Alg " + a.String())
	}
	return a.Hash().New()
}

// TPMAlgID is the TPM_ALG_ID of a (TPM 2.0 Part 2, table 9): 0x000B for
// SHA-256 and 0x000C for SHA-384.
func (a Alg) TPMAlgID() uint16 {
	switch a {
	case SHA256:
		return 0x000B
	case SHA384:
		return 0x000C
	}
	return 0
}

func algFromTPM(id uint16) (Alg, bool) {
	switch id {
	case 0x000B:
		return SHA256, true
	case 0x000C:
		return SHA384, true
	}
	return 0, false
}

func (a Alg) check() error {
	if !a.Valid() {
		return fmt.Errorf("invalid digest algorithm %d (want sha256 or sha384)", uint8(a))
	}
	return nil
}

// FormatDigest returns the wire form "<alg>:<lowercase hex>" of sum.
func FormatDigest(a Alg, sum []byte) string {
	return a.String() + ":" + hex.EncodeToString(sum)
}

// ParseDigest parses a digest string "sha256:<64 hex>" or "sha384:<96 hex>".
// Hex must be lowercase: a digest has exactly one valid spelling.
func ParseDigest(s string) (Alg, []byte, error) {
	prefix, hx, ok := strings.Cut(s, ":")
	if !ok {
		return 0, nil, fmt.Errorf("digest %q: want ALG:HEX", truncate(s))
	}
	var a Alg
	switch prefix {
	case "sha256":
		a = SHA256
	case "sha384":
		a = SHA384
	default:
		return 0, nil, fmt.Errorf("digest %q: unsupported algorithm %q", truncate(s), truncate(prefix))
	}
	if len(hx) != 2*a.Size() {
		return 0, nil, fmt.Errorf("digest %q: want %d hex digits for %s, got %d", truncate(s), 2*a.Size(), a, len(hx))
	}
	for i := 0; i < len(hx); i++ {
		c := hx[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return 0, nil, fmt.Errorf("digest %q: not lowercase hex", truncate(s))
		}
	}
	sum, _ := hex.DecodeString(hx)
	return a, sum, nil
}

// truncate keeps error messages about untrusted strings short.
func truncate(s string) string {
	const n = 80
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// DigestBytes returns the digest string of b.
func DigestBytes(a Alg, b []byte) string {
	h := a.New()
	h.Write(b)
	return FormatDigest(a, h.Sum(nil))
}

// DigestCmdline returns the digest of a kernel command line: the hash of
// its exact bytes, with no terminating NUL and no trimming.
func DigestCmdline(a Alg, cmdline string) string {
	return DigestBytes(a, []byte(cmdline))
}

// bufSize is the read size for streaming digests: large enough that the
// per-read system call cost is negligible next to hashing, small enough to
// stay in L2 cache.
const bufSize = 256 << 10

// DigestReader hashes r to EOF and returns the digest string and the number
// of bytes read. It stops early with ctx's error if ctx is cancelled.
func DigestReader(ctx context.Context, r io.Reader, a Alg) (string, int64, error) {
	if err := a.check(); err != nil {
		return "", 0, err
	}
	h := a.New()
	n, err := copyCtx(ctx, h, r, make([]byte, bufSize))
	if err != nil {
		return "", n, err
	}
	return FormatDigest(a, h.Sum(nil)), n, nil
}

// DigestFile hashes the file at path (a kernel, bzImage or ELF vmlinux
// alike, an initrd, any blob: just its bytes) and returns the digest string
// and the file's size.
func DigestFile(ctx context.Context, path string, a Alg) (string, int64, error) {
	if err := a.check(); err != nil {
		return "", 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("measure %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", 0, fmt.Errorf("measure %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", 0, fmt.Errorf("measure %s: not a regular file", path)
	}
	d, n, err := DigestReader(ctx, f, a)
	if err != nil {
		return "", 0, fmt.Errorf("measure %s: %w", path, err)
	}
	return d, n, nil
}

// copyCtx copies src to dst through buf, checking ctx between reads.
func copyCtx(ctx context.Context, dst io.Writer, src io.Reader, buf []byte) (int64, error) {
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
