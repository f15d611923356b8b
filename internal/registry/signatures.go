package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bulwark-project/bulwark/internal/fsutil"
)

// Signatures reads the cosign signatures stored in repo's registry for the
// image digest ("sha256:<hex>"): the tag sha256-<hex>.sig of repo (a
// repository name such as "ghcr.io/org/app", without tag or digest). An
// unsigned image gives (nil, nil). Nothing is trusted: each signature is
// still verified against the measured digest by the launch.
func Signatures(ctx context.Context, repo, digest string, opts Options) ([]Signature, error) {
	var nameOpts []name.Option
	if opts.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	d, err := name.NewDigest(repo+"@"+digest, nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("%s@%s: not an image reference: %w", repo, digest, err)
	}
	return cosignSignatures(d, []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)})
}

// AppendLayoutSignatures adds sigs to the OCI image layout at dir as
// 'cosign save' stores them: one manifest, annotated
// kind=dev.cosignproject.cosign/sigs in index.json, whose layers are the
// payloads with each signature in an annotation. LayoutSignatures reads them
// back; measure.OpenImage skips the entry (it is not an image). No
// signatures leave the layout as it is.
func AppendLayoutSignatures(dir string, sigs []Signature) error {
	if len(sigs) == 0 {
		return nil
	}
	if len(sigs) > maxSignatureLayers {
		return fmt.Errorf("%d cosign signatures, more than %d", len(sigs), maxSignatureLayers)
	}
	type descriptor struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int               `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	blobs := filepath.Join(dir, "blobs", "sha256")
	write := func(b []byte) (string, error) {
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(blobs, h), b, 0o600); err != nil {
			return "", err
		}
		return "sha256:" + h, nil
	}
	config := []byte(`{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}`)
	cd, err := write(config)
	if err != nil {
		return err
	}
	manifest := struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        descriptor   `json:"config"`
		Layers        []descriptor `json:"layers"`
	}{2, "application/vnd.oci.image.manifest.v1+json", descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: cd, Size: len(config)}, nil}
	for i, s := range sigs {
		if len(s.Payload) > maxPayloadSize || len(s.SignatureB64) == 0 || len(s.SignatureB64) > maxSignatureB64 {
			return fmt.Errorf("cosign signature %d: payload of %d bytes, signature of %d", i, len(s.Payload), len(s.SignatureB64))
		}
		pd, err := write(s.Payload)
		if err != nil {
			return err
		}
		manifest.Layers = append(manifest.Layers, descriptor{MediaType: simpleSigningMediaType, Digest: pd, Size: len(s.Payload),
			Annotations: map[string]string{signatureAnnotation: string(s.SignatureB64)}})
	}
	mb, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	md, err := write(mb)
	if err != nil {
		return err
	}
	indexPath := filepath.Join(dir, "index.json")
	raw, err := fsutil.ReadFileLimit(indexPath, maxLayoutIndex)
	if err != nil {
		return err
	}
	var index map[string]json.RawMessage
	if err := json.Unmarshal(raw, &index); err != nil {
		return fmt.Errorf("%s: %w", indexPath, err)
	}
	var entries []json.RawMessage
	if m, ok := index["manifests"]; ok {
		if err := json.Unmarshal(m, &entries); err != nil {
			return fmt.Errorf("%s: manifests: %w", indexPath, err)
		}
	}
	e, err := json.Marshal(descriptor{MediaType: manifest.MediaType, Digest: md, Size: len(mb), Annotations: map[string]string{"kind": cosignSigsKind}})
	if err != nil {
		return err
	}
	if index["manifests"], err = json.Marshal(append(entries, e)); err != nil {
		return err
	}
	out, err := json.Marshal(index)
	if err != nil {
		return err
	}
	return os.WriteFile(indexPath, out, 0o600)
}
