package measure

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// DefaultMaxUnpacked bounds the uncompressed size of all of an image's
// layers together (ImageOptions.MaxUnpacked): the guest holds its root
// filesystem in memory, and a small layer that unpacks to gigabytes (a
// decompression bomb) must fail at once, not grow the launcher.
const DefaultMaxUnpacked = 1 << 30

// ErrTooLarge is wrapped by the error for an image whose layers unpack to
// more than ImageOptions.MaxUnpacked bytes.
var ErrTooLarge = errors.New("image unpacks to more than the allowed size")

// layerJob is one layer blob to verify. digest is what it must hash to ("" to
// compute it, for docker archives); diffID is what its uncompressed content
// must hash to.
type layerJob struct {
	index  int
	name   string
	digest string
	size   int64
	diffID string
	// recompress asks, for a blob stored uncompressed, for the digest and
	// size of its gzip compression as go-containerregistry compresses a
	// layer (recompressedLevel): what 'crane push' uploads for it.
	recompress bool
	kind       string  // set by hashing: "gzip", "zstd" or "none"
	gzDigest   string  // set by hashing with recompress and kind "none"
	gzSize     int64   // the size of that compression
	pinned     *Pinned // set by hashing when the image is pinned
}

// layerBudget is the uncompressed bytes the image's layers may still use,
// shared by the workers that verify them.
type layerBudget struct {
	max  int64
	used atomic.Int64
}

// budgetWriter counts bytes against the budget and fails past it.
type budgetWriter struct {
	b    *layerBudget
	what string
}

func (w budgetWriter) Write(p []byte) (int, error) {
	if w.b.used.Add(int64(len(p))) > w.b.max {
		return 0, fmt.Errorf("%s: %w: its layers unpack to more than %d bytes (a decompression bomb, or an image too large for a sandbox)", w.what, ErrTooLarge, w.b.max)
	}
	return len(p), nil
}

// verifyLayers verifies the layer blobs on up to workers goroutines.
func (im *Image) verifyLayers(ctx context.Context, jobs []layerJob, opts ImageOptions) error {
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, len(jobs))
	budget := &layerBudget{max: opts.MaxUnpacked}
	if budget.max <= 0 {
		budget.max = DefaultMaxUnpacked
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan *layerJob)
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, bufSize)
			for j := range next {
				if err := im.verifyLayer(ctx, j, buf, budget, opts.Pin); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
						cancel()
					}
					mu.Unlock()
				}
			}
		}()
	}
feed:
	for i := range jobs {
		select {
		case next <- &jobs[i]:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		for i := range jobs {
			jobs[i].pinned.Close()
			jobs[i].pinned = nil
		}
	}
	return firstErr
}

// verifyLayer reads one layer blob exactly once. The same bytes are hashed
// (the blob digest and size), decompressed and hashed again (the config's
// diff_id, within the unpacked budget) and, when pin is set, copied into a
// sealed memfd: what V1Image later serves is what was checked here, whatever
// happens to the file afterwards. The blob is read to its end even when the
// decompressor stops early, so no check depends on a consumer draining it.
func (im *Image) verifyLayer(ctx context.Context, j *layerJob, buf []byte, budget *layerBudget, pin bool) (err error) {
	what := fmt.Sprintf("layer %d (%s)", j.index, j.digest)
	if j.digest == "" {
		what = fmt.Sprintf("layer %d (%s)", j.index, j.name)
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%s: %w", what, err)
		}
	}()
	rc, size, err := im.store.open(j.name)
	if err != nil {
		return err
	}
	defer rc.Close()
	if j.digest == "" {
		j.size = size // docker archive: the member is the blob
	}
	blob := sha256.New()
	var sink io.Writer = blob
	var pw *pinWriter
	if pin {
		if pw, err = newPinWriter(fmt.Sprintf("layer-%d", j.index)); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				pw.abort()
			}
		}()
		sink = io.MultiWriter(blob, pw)
	}
	// At most one byte past the declared size, to notice a longer blob.
	src := &ctxReader{ctx: ctx, r: io.TeeReader(io.LimitReader(rc, j.size+1), sink)}
	diff := sha256.New()
	var unpackErr error
	un, rest, kind, err := decompress(src)
	j.kind = kind
	if err == nil {
		var gz *recompressor
		var out io.Writer = io.MultiWriter(diff, budgetWriter{b: budget, what: "image"})
		if j.recompress && kind == "none" {
			gz = newRecompressor()
			out = io.MultiWriter(out, gz)
		}
		_, err = io.CopyBuffer(out, un, buf)
		un.Close()
		if err == nil && gz != nil {
			j.gzDigest, j.gzSize, err = gz.sum()
		}
	}
	if err != nil {
		if errors.Is(err, ErrTooLarge) || ctx.Err() != nil {
			return err
		}
		unpackErr = fmt.Errorf("decompressing (%s): %w", kind, err)
		rest = src
	}
	// Read the blob to its end whatever the decompressor did: a damaged
	// blob is reported as not matching its digest, before anything it
	// decompressed to is judged, and whatever follows the compressed
	// stream is part of the blob too.
	trailing, err := io.CopyBuffer(io.Discard, rest, buf)
	if err != nil {
		return err
	}
	switch got := src.n; {
	case got > j.size:
		return fmt.Errorf("%w: longer than the %d bytes its descriptor says", ErrDigestMismatch, j.size)
	case got < j.size:
		return fmt.Errorf("%w: %d bytes, but its descriptor says %d", ErrDigestMismatch, got, j.size)
	}
	gotDigest := FormatDigest(SHA256, blob.Sum(nil))
	if j.digest == "" {
		j.digest = gotDigest
	} else if gotDigest != j.digest {
		return fmt.Errorf("%w: it hashes to %s", ErrDigestMismatch, gotDigest)
	}
	if unpackErr != nil {
		return unpackErr
	}
	if trailing > 0 && kind != "none" {
		return fmt.Errorf("%d bytes after the end of the %s stream", trailing, kind)
	}
	if got := FormatDigest(SHA256, diff.Sum(nil)); got != j.diffID {
		return fmt.Errorf("%w: uncompressed content hashes to %s, but the config's diff_id is %s", ErrDigestMismatch, got, j.diffID)
	}
	if pw != nil {
		if j.pinned, err = pw.seal(j.digest); err != nil {
			return err
		}
	}
	return nil
}

// decompress returns the uncompressed stream of a layer blob, recognising
// gzip and zstd by their magic numbers (as container runtimes do) and
// passing anything else through as a plain tar. It is the one decompressor
// for layers: verification and V1Image use it alike, so the bytes the
// guest's root filesystem is built from are the bytes the diff_id was
// checked over. kind is "gzip", "zstd" or "none". rest is what of r the
// decompressor has not consumed once rd is at its end (gzip reads member
// after member and zstd frame after frame, so it is empty for a well-formed
// blob). Close rd when done.
func decompress(r io.Reader) (rd io.ReadCloser, rest io.Reader, kind string, err error) {
	br := bufio.NewReaderSize(r, 512)
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br) // a bufio.Reader: flate reads no further than it needs
		if err != nil {
			return nil, nil, "gzip", err
		}
		return zr, br, "gzip", nil
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(128<<20))
		if err != nil {
			return nil, nil, "zstd", err
		}
		return zstdReader{zr}, br, "zstd", nil
	}
	return io.NopCloser(br), br, "none", nil
}

// zstdReader releases the decoder at the end of the stream or on Close.
type zstdReader struct{ d *zstd.Decoder }

func (z zstdReader) Read(p []byte) (int, error) {
	n, err := z.d.Read(p)
	if err != nil {
		z.d.Close()
	}
	return n, err
}

func (z zstdReader) Close() error { z.d.Close(); return nil }

// ctxReader stops with ctx's error once it is done, and counts bytes read.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
	n   int64
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// recompressedLevel is the gzip level go-containerregistry compresses an
// uncompressed layer with (its internal/gzip ReadCloser: BestSpeed), which
// is what 'crane push' of a `docker save` archive uploads. Go's
// compress/gzip writes the same bytes for the same input and level
// whatever the write boundaries, so the compression is reproducible.
const recompressedLevel = gzip.BestSpeed

// recompressor hashes the gzip compression of what is written to it.
type recompressor struct {
	h  hash.Hash
	n  countWriter
	zw *gzip.Writer
}

func newRecompressor() *recompressor {
	r := &recompressor{h: sha256.New()}
	r.zw, _ = gzip.NewWriterLevel(io.MultiWriter(r.h, &r.n), recompressedLevel) // the level is valid
	return r
}

func (r *recompressor) Write(p []byte) (int, error) { return r.zw.Write(p) }

// sum ends the stream and returns its digest and size.
func (r *recompressor) sum() (string, int64, error) {
	if err := r.zw.Close(); err != nil {
		return "", 0, err
	}
	return FormatDigest(SHA256, r.h.Sum(nil)), int64(r.n), nil
}

// recompress returns the gzip compression of r as recompressor computes it.
func recompress(r io.Reader) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		zw, _ := gzip.NewWriterLevel(pw, recompressedLevel)
		_, err := io.Copy(zw, r)
		if err == nil {
			err = zw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }
