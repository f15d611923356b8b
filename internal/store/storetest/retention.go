package storetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
)

// SealKey returns a fresh key to sign seals with in tests.
func SealKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// RecordAttestations records n attestations of one new node, the i-th at
// start+i*step (its verdict record's time), and returns their ids.
func RecordAttestations(t testing.TB, s store.Store, n int, start time.Time, step time.Duration) []string {
	ctx := context.Background()
	nd := NewNode(t)
	must(t, s.CreateNode(ctx, nd))
	ids := make([]string, n)
	for i := range n {
		at := start.Add(time.Duration(i) * step)
		ids[i] = fmt.Sprintf("att-%d-%x", i, random(t, 4))
		_, err := s.RecordAttestation(ctx, store.Attestation{ID: ids[i], NodeID: nd.ID, Policy: "web@1", Allow: true,
			SandboxID: "sb", GuestPublicKey: random(t, 32), Secrets: []string{"db"}, CreatedAt: at, ReleaseExpires: at.Add(time.Minute)})
		must(t, err)
	}
	return ids
}

// RecordAttestationsAt records n attestations of one new node, all at
// time at, concurrently (so that they share group commits); it returns
// their ids.
func RecordAttestationsAt(t testing.TB, s store.Store, n int, at time.Time) []string {
	ctx := context.Background()
	nd := NewNode(t)
	must(t, s.CreateNode(ctx, nd))
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("att-%d-%x", i, random(t, 4))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 32 {
				_, err := s.RecordAttestation(ctx, store.Attestation{ID: ids[i], NodeID: nd.ID, Policy: "web@1", Allow: true,
					SandboxID: "sb", GuestPublicKey: make([]byte, 32), Secrets: []string{"db"}, CreatedAt: at, ReleaseExpires: at.Add(time.Minute)})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	must(t, <-errs)
	return ids
}

// testRetention: Retain purges the attestations and audit records older
// than the cutoff, in batches, under a signed seal; what remains verifies
// from the seal, and only with the seal's key.
func testRetention(t *testing.T, s store.Store) {
	ctx := context.Background()
	key := SealKey(t)
	ids := RecordAttestations(t, s, 30, t0, time.Minute)
	// A release of a kept attestation: its record stays with it.
	_, _, err := s.ConsumeRelease(ctx, ids[20], t0.Add(20*time.Minute+time.Second))
	must(t, err)
	all, err := s.ReadAudit(ctx, 0, 1000)
	must(t, err)
	_, err = s.AuditSeal(ctx)
	wantErr(t, "seal before any purge", err, store.ErrNotFound)

	// Records at t0..t0+10min are older than the cutoff: 11 of them.
	cutoff := t0.Add(10*time.Minute + 30*time.Second)
	p, err := store.Retain(ctx, s, cutoff, store.RetainOptions{Signer: key, Batch: 3})
	must(t, err)
	if p.Audit != 11 || p.Attestations != 11 {
		t.Fatalf("Retain purged %+v, want 11 audit records and 11 attestations", p)
	}
	for i, id := range ids {
		_, err := s.GetAttestation(ctx, id)
		if i <= 10 {
			wantErr(t, "purged attestation", err, store.ErrNotFound)
		} else {
			must(t, err)
		}
	}
	seal, err := s.AuditSeal(ctx)
	must(t, err)
	if seal.Seq != 11 || !bytes.Equal(seal.Hash, all[10].Hash) {
		t.Fatalf("seal at %d, want record 11 (%v)", seal.Seq, seal.Checkpoint)
	}
	must(t, store.VerifySeal(&key.PublicKey, seal))
	if err := store.VerifyCheckpoint(&key.PublicKey, seal.Checkpoint, seal.Sig); err == nil {
		t.Fatal("a seal's signature verifies as a checkpoint's")
	}
	kept, err := s.ReadAudit(ctx, 0, 1000)
	must(t, err)
	if len(kept) != len(all)-11 || kept[0].Seq != 12 {
		t.Fatalf("kept %d records from %d, want %d from 12", len(kept), kept[0].Seq, len(all)-11)
	}

	// What remains verifies from the seal, and only with its key.
	res, err := store.VerifyAudit(ctx, s, store.VerifyOptions{SealKey: &key.PublicKey})
	must(t, err)
	if res.First != 12 || res.Records != uint64(len(kept)) || res.Seal.Seq != 11 {
		t.Fatalf("VerifyAudit = %+v", res)
	}
	_, err = store.VerifyAudit(ctx, s, store.VerifyOptions{})
	wantErr(t, "purged log without the seal's key", err, store.ErrAuditChain)
	_, err = store.VerifyAudit(ctx, s, store.VerifyOptions{SealKey: &SealKey(t).PublicKey})
	wantErr(t, "purged log with another key", err, store.ErrAuditChain)
	res, err = store.VerifyAudit(ctx, s, store.VerifyOptions{AllowUnsealedStart: true})
	must(t, err)
	if !res.Unsealed || res.First != 12 {
		t.Fatalf("unsealed start: %+v", res)
	}
	// Trusted checkpoints before the seal went with their records; one
	// after it is still checked.
	trusted := []store.Checkpoint{{Seq: 3, Hash: all[2].Hash}, {Seq: 20, Hash: all[19].Hash}}
	_, err = store.VerifyAudit(ctx, s, store.VerifyOptions{SealKey: &key.PublicKey, Trusted: trusted})
	must(t, err)
	trusted[1].Hash = all[18].Hash
	_, err = store.VerifyAudit(ctx, s, store.VerifyOptions{SealKey: &key.PublicKey, Trusted: trusted})
	wantErr(t, "wrong checkpoint after the seal", err, store.ErrAuditChain)

	// Incremental verification from a checkpoint.
	since := func(seq uint64, hash []byte) (store.VerifyResult, error) {
		return store.VerifyAudit(ctx, s, store.VerifyOptions{SealKey: &key.PublicKey, Since: &store.Checkpoint{Seq: seq, Hash: hash}})
	}
	res, err = since(20, all[19].Hash)
	must(t, err)
	if res.First != 20 || res.Records != uint64(len(all)-19) {
		t.Fatalf("--since 20: %+v", res)
	}
	_, err = since(20, all[18].Hash)
	wantErr(t, "--since with a wrong hash", err, store.ErrAuditChain)
	res, err = since(11, seal.Hash) // the seal itself: its record is gone
	must(t, err)
	if res.First != 12 || res.Records != uint64(len(kept)) {
		t.Fatalf("--since the seal: %+v", res)
	}
	_, err = since(11, all[9].Hash)
	wantErr(t, "--since the seal's seq with another hash", err, store.ErrAuditChain)
	_, err = since(5, all[4].Hash)
	wantErr(t, "--since a purged checkpoint", err, store.ErrCheckpointPurged)
	_, err = since(uint64(len(all)+5), all[4].Hash)
	wantErr(t, "--since past the end", err, store.ErrAuditChain)

	// PurgeSealed refuses what it must not purge through.
	head, err := s.AuditHead(ctx)
	must(t, err)
	signed := func(c store.Checkpoint) store.Seal {
		sl, err := store.SignSeal(rand.Reader, key, c)
		must(t, err)
		return sl
	}
	for _, tc := range []struct {
		what  string
		seal  store.Seal
		limit int
		want  error
	}{
		{"the head", signed(store.Checkpoint{Seq: head.Seq, Hash: head.Hash}), 10, store.ErrConflict},
		{"past the head", signed(store.Checkpoint{Seq: head.Seq + 5, Hash: head.Hash}), 10, store.ErrConflict},
		{"a hash not the record's", signed(store.Checkpoint{Seq: 15, Hash: all[13].Hash}), 10, store.ErrConflict},
		{"before the stored seal", signed(store.Checkpoint{Seq: 5, Hash: all[4].Hash}), 10, store.ErrConflict},
		{"the stored seal's seq, another hash", signed(store.Checkpoint{Seq: 11, Hash: all[12].Hash}), 10, store.ErrConflict},
		{"no signature", store.Seal{Checkpoint: store.Checkpoint{Seq: 15, Hash: all[14].Hash}}, 10, store.ErrInvalid},
		{"a short hash", store.Seal{Checkpoint: store.Checkpoint{Seq: 15, Hash: all[14].Hash[:8]}, Sig: []byte{1}}, 10, store.ErrInvalid},
		{"limit 0", signed(store.Checkpoint{Seq: 15, Hash: all[14].Hash}), 0, store.ErrInvalid},
		{"limit too large", signed(store.Checkpoint{Seq: 15, Hash: all[14].Hash}), store.MaxPurgeBatch + 1, store.ErrInvalid},
	} {
		_, err := s.PurgeSealed(ctx, tc.seal, tc.limit)
		wantErr(t, "PurgeSealed "+tc.what, err, tc.want)
	}
	if sl, err := s.AuditSeal(ctx); err != nil || sl.Seq != 11 {
		t.Fatalf("a refused purge moved the seal to %d (%v)", sl.Seq, err)
	}

	// One record per transaction: More until the seal is reached.
	sl := signed(store.Checkpoint{Seq: 13, Hash: all[12].Hash})
	p, err = s.PurgeSealed(ctx, sl, 1)
	must(t, err)
	if p.Audit != 1 || p.Attestations != 1 || !p.More {
		t.Fatalf("first batch of one: %+v", p)
	}
	// A verifier running meanwhile sees the new seal.
	res, err = store.VerifyAudit(ctx, s, store.VerifyOptions{SealKey: &key.PublicKey})
	must(t, err)
	if res.First != 13 || res.Seal.Seq != 13 {
		t.Fatalf("mid-purge verify: %+v", res)
	}
	p, err = s.PurgeSealed(ctx, sl, 1)
	must(t, err)
	if p.Audit != 1 || p.More {
		t.Fatalf("second batch of one: %+v", p)
	}
	p, err = s.PurgeSealed(ctx, sl, 1)
	must(t, err)
	if p.Audit != 0 || p.More {
		t.Fatalf("nothing left: %+v", p)
	}

	// A purge interrupted after its first batch is finished by the next
	// Retain, even when nothing is older than its cutoff any more (a
	// longer retention since).
	p, err = s.PurgeSealed(ctx, signed(store.Checkpoint{Seq: 16, Hash: all[15].Hash}), 1)
	must(t, err)
	if p.Audit != 1 || !p.More {
		t.Fatalf("interrupted purge: %+v", p)
	}
	p, err = store.Retain(ctx, s, t0, store.RetainOptions{Signer: key})
	must(t, err)
	if p.Audit != 2 {
		t.Fatalf("Retain resuming the interrupted purge through 16 purged %+v, want records 15 and 16", p)
	}

	// Everything older than the cutoff: the head stays, and the chain goes
	// on from it.
	p, err = store.Retain(ctx, s, t0.Add(24*time.Hour), store.RetainOptions{Signer: key})
	must(t, err)
	if p.Audit != len(all)-17 {
		t.Fatalf("Retain of all but the head purged %+v, want %d", p, len(all)-17)
	}
	if h, err := s.AuditHead(ctx); err != nil || h.Seq != head.Seq {
		t.Fatalf("head after purging all else: %d, %v", h.Seq, err)
	}
	_, err = s.AppendAudit(ctx, store.AuditEntry{Kind: store.KindAdmin, Subject: "after"})
	must(t, err)
	res, err = store.VerifyAudit(ctx, s, store.VerifyOptions{SealKey: &key.PublicKey})
	must(t, err)
	if res.First != head.Seq || res.Records != 2 {
		t.Fatalf("after purging all but the head: %+v", res)
	}
	if _, err := store.Retain(ctx, s, t0, store.RetainOptions{}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Retain without a signer: %v", err)
	}
}
