package measure

import (
	"crypto/sha256"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// V1Image returns the verified image as a go-containerregistry v1.Image
// (for kvm/ to build a root filesystem from). It needs an image opened with
// ImageOptions.Pin: its manifest and config are the verified bytes held in
// memory and its layers the sealed memfds filled by the single read that
// verified them, so nothing it serves comes from the files again.
// Uncompressed() uses the same decompressor that checked the diff_id (and
// checks it again at the end of the stream). The v1.Image is valid until
// Close.
func (im *Image) V1Image() (v1.Image, error) {
	for _, li := range im.Layers {
		if im.pinned[li.Digest] == nil {
			return nil, fmt.Errorf("image %s: layer %s is not pinned: open the image with ImageOptions.Pin to use it", im.Source, li.Digest)
		}
	}
	base, err := partial.CompressedToImage(&imageCore{im: im})
	if err != nil {
		return nil, err
	}
	return &verifiedImage{Image: base, im: im}, nil
}

type imageCore struct{ im *Image }

func (c *imageCore) RawConfigFile() ([]byte, error) { return c.im.config, nil }
func (c *imageCore) RawManifest() ([]byte, error)   { return c.im.manifest, nil }
func (c *imageCore) MediaType() (types.MediaType, error) {
	return types.MediaType(c.im.ManifestMediaType), nil
}
func (c *imageCore) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	l, err := c.im.layer(h)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// verifiedImage overrides the layer accessors so that layers come with
// verified Uncompressed readers.
type verifiedImage struct {
	v1.Image
	im *Image
}

func (v *verifiedImage) Layers() ([]v1.Layer, error) {
	out := make([]v1.Layer, 0, len(v.im.Layers))
	for _, li := range v.im.Layers {
		l, err := v.im.layer(mustHash(li.Digest))
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

func (v *verifiedImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	if h.String() == v.im.ConfigDigest {
		return partial.ConfigLayer(v)
	}
	return v.im.layer(h)
}

func (v *verifiedImage) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	for _, li := range v.im.Layers {
		if li.DiffID == h.String() {
			return v.im.layer(mustHash(li.Digest))
		}
	}
	return nil, fmt.Errorf("image %s has no layer with diff_id %s", v.im.ManifestDigest, h)
}

// layer returns the verified layer with blob digest h.
func (im *Image) layer(h v1.Hash) (*verifiedLayer, error) {
	for _, li := range im.Layers {
		if li.Digest == h.String() {
			return &verifiedLayer{im: im, info: li}, nil
		}
	}
	return nil, fmt.Errorf("image %s has no layer %s", im.ManifestDigest, h)
}

type verifiedLayer struct {
	im   *Image
	info LayerInfo
}

var _ v1.Layer = (*verifiedLayer)(nil)

func (l *verifiedLayer) Digest() (v1.Hash, error) { return v1.NewHash(l.info.Digest) }
func (l *verifiedLayer) DiffID() (v1.Hash, error) { return v1.NewHash(l.info.DiffID) }
func (l *verifiedLayer) Size() (int64, error)     { return l.info.Size, nil }
func (l *verifiedLayer) MediaType() (types.MediaType, error) {
	return types.MediaType(l.info.MediaType), nil
}

// stored returns the layer blob as stored: its sealed copy.
func (l *verifiedLayer) stored() (io.ReadCloser, error) {
	p := l.im.pinned[l.info.Digest]
	if p == nil {
		return nil, fmt.Errorf("layer %s: not pinned", l.info.Digest)
	}
	return io.NopCloser(io.NewSectionReader(p.File, 0, p.Size)), nil
}

// Compressed returns the layer blob the manifest names: its sealed copy,
// or, for a layer a docker archive saved uncompressed, the sealed copy
// compressed again as OpenImage compressed it to compute Digest (checked
// against Digest and Size at its end).
func (l *verifiedLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.stored()
	if err != nil || l.info.StoredDigest == "" {
		return rc, err
	}
	gz := recompress(rc)
	return &readCloser{Reader: newVerifyingReader(gz, l.info.Digest, l.info.Size), close: gz.Close}, nil
}

// Uncompressed returns the layer's tar stream, decompressed from the sealed
// blob by the decompressor that verified it, and checked against the
// diff_id again at its end.
func (l *verifiedLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.stored()
	if err != nil {
		return nil, err
	}
	un, _, _, err := decompress(rc)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", l.info.Digest, err)
	}
	vr := &diffIDReader{r: un, h: sha256.New(), want: l.info.DiffID, what: "layer " + l.info.Digest}
	return &readCloser{Reader: vr, close: un.Close}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r *readCloser) Close() error { return r.close() }

// diffIDReader checks the uncompressed stream against the diff_id at EOF.
type diffIDReader struct {
	r io.Reader
	h interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}
	want   string
	what   string
	failed error
}

func (d *diffIDReader) Read(p []byte) (int, error) {
	if d.failed != nil {
		return 0, d.failed
	}
	n, err := d.r.Read(p)
	d.h.Write(p[:n])
	if err == io.EOF {
		if got := FormatDigest(SHA256, d.h.Sum(nil)); got != d.want {
			d.failed = fmt.Errorf("%s: %w: uncompressed content hashes to %s, the config's diff_id is %s", d.what, ErrDigestMismatch, got, d.want)
			return n, d.failed
		}
	} else if err != nil {
		d.failed = err
	}
	return n, err
}
