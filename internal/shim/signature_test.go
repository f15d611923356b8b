package shim

import (
	"context"
	"errors"
	"testing"
)

func TestSignatureRegistry(t *testing.T) {
	for _, tc := range []struct {
		name, image, allowed string
		repo                 string
		insecure, ok, bad    bool
	}{
		{"nothing allowed", "ghcr.io/org/app:1", "", "", false, false, false},
		{"listed", "ghcr.io/org/app:1", "quay.io, ghcr.io", "ghcr.io/org/app", false, true, false},
		{"by digest", "ghcr.io/org/app@sha256:" + zeros64, "ghcr.io", "ghcr.io/org/app", false, true, false},
		{"not listed", "evil.example/app:1", "ghcr.io", "", false, false, false},
		{"a prefix of a listed host is not it", "ghcr.io.evil.example/app:1", "ghcr.io", "", false, false, false},
		{"plain HTTP only where written", "127.0.0.1:5000/app:1", "http://127.0.0.1:5000", "127.0.0.1:5000/app", true, true, false},
		{"port matters", "127.0.0.1:5001/app:1", "http://127.0.0.1:5000", "", false, false, false},
		{"docker.io is Docker Hub", "docker.io/library/busybox:1", "docker.io", "index.docker.io/library/busybox", false, true, false},
		{"malformed name", "UPPER/Case::", "ghcr.io", "", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo, insecure, ok, err := signatureRegistry(tc.image, tc.allowed)
			if tc.bad {
				if !errors.Is(err, errImage) {
					t.Fatalf("err = %v, want errImage", err)
				}
				return
			}
			if err != nil || repo != tc.repo || insecure != tc.insecure || ok != tc.ok {
				t.Fatalf("got (%q, %v, %v, %v), want (%q, %v, %v)", repo, insecure, ok, err, tc.repo, tc.insecure, tc.ok)
			}
		})
	}
}

// A listed registry that cannot be reached fails the container, naming the
// setting; an unlisted one is not asked.
func TestAddRegistrySignaturesUnreachable(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n, err := addRegistrySignatures(ctx, "127.0.0.1:1/app:1", "sha256:"+zeros64, t.TempDir(), "http://127.0.0.1:1"); err == nil || n != 0 {
		t.Fatalf("unreachable registry: %d, %v; want an error", n, err)
	} else if !errors.Is(err, errImage) {
		t.Fatalf("err = %v, want errImage", err)
	}
	if n, err := addRegistrySignatures(ctx, "127.0.0.1:1/app:1", "sha256:"+zeros64, t.TempDir(), "ghcr.io"); err != nil || n != 0 {
		t.Fatalf("unlisted registry: %d, %v; want not asked", n, err)
	}
}

const zeros64 = "0000000000000000000000000000000000000000000000000000000000000000"
