package signing

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
)

// File-name conventions for signatures stored next to artifacts (see
// docs/signing.md). The launcher looks there unless told otherwise.
const (
	SignatureSuffix = ".sig"         // base64 signature, as cosign sign-blob writes
	BundleSuffix    = ".bundle.json" // sigstore bundle v0.3 (JSON)
	PayloadSuffix   = ".payload.json"
)

// SignaturePath is where the detached signature of the file at path lives:
// path + ".sig".
func SignaturePath(path string) string { return path + SignatureSuffix }

// BundlePath is where the sigstore bundle of the file at path lives:
// path + ".bundle.json".
func BundlePath(path string) string { return path + BundleSuffix }

// ImagePaths returns where the signature of an image given as an OCI layout
// directory or an image archive lives: the signature D.sig and the signed
// simple-signing payload D.payload.json, beside D (a trailing slash in D is
// ignored: "img/" gives "img.sig").
func ImagePaths(image string) (sigPath, payloadPath string) {
	base := filepath.Clean(image)
	return base + SignatureSuffix, base + PayloadSuffix
}

// ReadSignatureFile reads a base64 signature file of at most
// MaxSignatureFileSize bytes. A missing file gives an error wrapping both
// ErrNoSignature and fs.ErrNotExist.
func ReadSignatureFile(path string) ([]byte, error) {
	return readSidecar(path, MaxSignatureFileSize, "signature")
}

// ReadPayloadFile reads an image signature payload of at most
// MaxPayloadSize bytes. A missing file gives an error wrapping ErrNoSignature.
func ReadPayloadFile(path string) ([]byte, error) {
	return readSidecar(path, MaxPayloadSize, "signature payload")
}

// ReadBundleFile reads a sigstore bundle of at most MaxBundleSize bytes. A
// missing file gives an error wrapping ErrNoSignature.
func ReadBundleFile(path string) ([]byte, error) {
	return readSidecar(path, MaxBundleSize, "bundle")
}

func readSidecar(path string, limit int64, what string) ([]byte, error) {
	b, err := ReadLimited(path, limit)
	if errors.Is(err, fs.ErrNotExist) {
		// Both classes: callers test either errors.Is(err, ErrNoSignature)
		// or errors.Is(err, fs.ErrNotExist).
		return nil, fmt.Errorf("%w: %s %s (%w)", ErrNoSignature, what, path, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	return b, nil
}
