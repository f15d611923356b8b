package store_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"testing"

	"github.com/bulwark-project/bulwark/internal/store/embedded"

	"github.com/bulwark-project/bulwark/internal/store"
)

func TestCheckpointAnchor(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ctx := context.Background()
	s, err := embedded.Open(ctx, t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 3 {
		if _, err := s.AppendAudit(ctx, store.AuditEntry{Kind: store.KindAdmin, Details: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	head, err := s.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cp := store.Checkpoint{Seq: head.Seq, Hash: head.Hash}
	for name, k := range map[string]crypto.Signer{"ecdsa": ec, "ed25519": ed, "rsa": rk} {
		t.Run(name, func(t *testing.T) {
			sig, err := store.SignCheckpoint(rand.Reader, k, cp)
			if err != nil {
				t.Fatal(err)
			}
			if err := store.VerifyCheckpoint(k.Public(), cp, sig); err != nil {
				t.Fatal(err)
			}
			other := store.Checkpoint{Seq: cp.Seq, Hash: bytes.Repeat([]byte{1}, 32)}
			if err := store.VerifyCheckpoint(k.Public(), other, sig); err == nil {
				t.Fatal("signature verified for another head hash")
			}
			other = store.Checkpoint{Seq: cp.Seq + 1, Hash: cp.Hash}
			if err := store.VerifyCheckpoint(k.Public(), other, sig); err == nil {
				t.Fatal("signature verified for another seq")
			}
		})
	}
	if _, err := store.SignCheckpoint(rand.Reader, ec, store.Checkpoint{}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("empty checkpoint: %v", err)
	}
	// The signed checkpoint is then a trusted anchor for verification.
	if _, err := store.VerifyAudit(ctx, s, store.VerifyOptions{Trusted: []store.Checkpoint{cp}}); err != nil {
		t.Fatal(err)
	}
}
