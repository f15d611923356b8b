package shim

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/policy"
	"github.com/containerd/containerd/content"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Annotations come from whoever creates the container: parseSpec never
// panics, and what it accepts is what the launch may be given.
func FuzzParseSpec(f *testing.F) {
	f.Add("app", "/k/vmlinux", "", "none", "c2ln", "e30=")
	f.Add("", "rel", "/x\x00", "a/b", "!!", "")
	f.Add("app", "", "", "", "", "e30=")
	f.Fuzz(func(t *testing.T, pol, kernel, initrd, template, sig, payload string) {
		ann := map[string]string{AnnotationPolicy: pol, AnnotationTemplate: template}
		for k, v := range map[string]string{AnnotationKernel: kernel, AnnotationInitrd: initrd, AnnotationSignature: sig, AnnotationSignaturePayload: payload} {
			if v != "" {
				ann[k] = v
			}
		}
		c, err := parseSpec(&specs.Spec{Annotations: ann})
		if err != nil {
			return
		}
		if !policy.ValidName(c.Policy) {
			t.Errorf("accepted policy %q", c.Policy)
		}
		for _, p := range []string{c.Kernel, c.Initrd} {
			if p != "" && (!filepath.IsAbs(p) || bytes.IndexByte([]byte(p), 0) >= 0) {
				t.Errorf("accepted path %q", p)
			}
		}
		if (c.Signature == nil) != (c.Payload == nil) {
			t.Errorf("signature %q without payload %q, or the reverse", c.Signature, c.Payload)
		}
	})
}

// What containerd's content store holds is read as untrusted bytes: any
// manifest or index is refused or exported, never a panic, and an export
// names the manifest it wrote.
func FuzzExportImage(f *testing.F) {
	ts := newTestStore(f)
	seed := func(d ocispec.Descriptor) {
		b, err := content.ReadBlob(context.Background(), ts.cs, d)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, d.MediaType == ocispec.MediaTypeImageIndex)
	}
	seed(ts.manifest)
	seed(ts.index(f, &ocispec.Platform{OS: "linux", Architecture: "amd64"}))
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:00","size":2}]}`), true)
	f.Add([]byte(`{"layers":[{"digest":"sha512:00","size":-1}]}`), false)
	base := f.TempDir()
	f.Fuzz(func(t *testing.T, raw []byte, index bool) {
		mt := ocispec.MediaTypeImageManifest
		if index {
			mt = ocispec.MediaTypeImageIndex
		}
		d := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(raw), Size: int64(len(raw))}
		// Straight into the store's files: its ingest fsyncs, too slow
		// for fuzzing; the store reads them as it reads its own.
		if err := os.WriteFile(filepath.Join(ts.root, "blobs", "sha256", d.Digest.Encoded()), raw, 0o444); err != nil && !os.IsPermission(err) {
			t.Fatal(err)
		}
		dir, err := os.MkdirTemp(base, "x")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		got, err := exportImage(context.Background(), ts.cs, d, filepath.Join(dir, "image"))
		if err != nil {
			return
		}
		if _, err := os.Stat(filepath.Join(dir, "image", "blobs", "sha256", got.Manifest.Digest.Encoded())); err != nil {
			t.Errorf("exported manifest %s is not in the layout: %v", got.Manifest.Digest, err)
		}
	})
}

// The image's /etc/passwd and /etc/group are the image author's bytes:
// resolveImageUser never panics, and a numeric USER:GROUP needs no file.
func FuzzResolveImageUser(f *testing.F) {
	f.Add("app", testPasswd, testGroup)
	f.Add("1000", "a:b:1000:x:y:z\n", "")
	f.Add("app:staff", testPasswd, testGroup)
	f.Add("5:6", "", "")
	f.Add("::", ":::::::\n", "::\n")
	f.Fuzz(func(t *testing.T, user, passwd, group string) {
		reads := 0
		uid, gid, err := resolveImageUser(user, staticFiles(passwd, group, &reads))
		if err == nil && (uid > maxID || gid > maxID) {
			t.Errorf("resolved %q to %d:%d", user, uid, gid)
		}
		if u, g, ok := strings.Cut(user, ":"); ok {
			if nu, e1 := parseID(u); e1 == nil {
				if ng, e2 := parseID(g); e2 == nil && (reads != 0 || err != nil || uid != nu || gid != ng) {
					t.Errorf("%q: %d:%d %v after %d reads", user, uid, gid, err, reads)
				}
			}
		}
	})
}

// What envOverrides accepts is what the launch accepts as -e.
func FuzzEnvOverrides(f *testing.F) {
	f.Add("A=1", "B=2", "A=2")
	f.Add("HOSTNAME=duo", "PATH="+defaultPath, "")
	f.Add("=", "A", "A B=1")
	f.Fuzz(func(t *testing.T, a, b, img string) {
		out, err := envOverrides([]string{a, b}, []string{img}, func(v string) bool { return v == "duo" })
		if err != nil {
			return
		}
		for _, kv := range out {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || measure.CheckEnvKey(k) != nil || measure.CheckEnvValue(v) != nil || kv == img {
				t.Errorf("accepted %q", kv)
			}
		}
	})
}
