package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"

	"github.com/bulwark-project/bulwark/internal/store"
)

// prefixChain is a launch log as attestd keeps it: n records with random
// digests, sandbox ids ids[i], and the PCR value after each.
func prefixChain(t testing.TB, ids []string) []store.PrefixRecord {
	pcr := make([]byte, 32)
	out := make([]store.PrefixRecord, len(ids))
	for i, id := range ids {
		d := random(t, 32)
		h := sha256.New()
		h.Write(pcr)
		h.Write(d)
		pcr = h.Sum(nil)
		out[i] = store.PrefixRecord{RecNum: uint64(i), SandboxID: id, Digest: d, PCR: pcr}
	}
	return out
}

// prefixOf is the prefix recs[:n] make in the boot cycle (reset, restart)
// at TPM clock clock.
func prefixOf(node string, recs []store.PrefixRecord, n int, reset, restart uint32, clock uint64) store.LaunchPrefix {
	return store.LaunchPrefix{NodeID: node, ResetCount: reset, RestartCount: restart, Clock: clock, Events: uint64(n), PCR: recs[n-1].PCR}
}

func testLaunchPrefix(t *testing.T, s store.Store) {
	ctx := context.Background()
	n := NewNode(t)
	must(t, s.CreateNode(ctx, n))
	recs := prefixChain(t, []string{"a", "b", "c", "d", "b", "e", "f"})
	recs[4].End = true // sandbox b ended: the store says which record is its END

	_, err := s.ReadLaunchPrefix(ctx, n.ID, 0, "")
	wantErr(t, "read before any", err, store.ErrNotFound)
	_, err = s.AdvanceLaunchPrefix(ctx, prefixOf("sha256:none", recs, 2, 1, 0, 10), recs[:2])
	wantErr(t, "advance an unknown node", err, store.ErrNotFound)

	check := func(what string, at uint64, sandbox string, events uint64, pcrAt []byte, nums ...uint64) store.PrefixView {
		t.Helper()
		v, err := s.ReadLaunchPrefix(ctx, n.ID, at, sandbox)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if v.Prefix.Events != events || !bytes.Equal(v.Prefix.PCR, recs[events-1].PCR) {
			t.Fatalf("%s: prefix of %d events (PCR %x), want %d", what, v.Prefix.Events, v.Prefix.PCR, events)
		}
		if !bytes.Equal(v.PCRAt, pcrAt) {
			t.Fatalf("%s: PCR after %d records %x, want %x", what, at, v.PCRAt, pcrAt)
		}
		if len(v.Sandbox) != len(nums) {
			t.Fatalf("%s: %d records for sandbox %q, want %v", what, len(v.Sandbox), sandbox, nums)
		}
		for i, r := range v.Sandbox {
			w := recs[nums[i]]
			if r.RecNum != w.RecNum || r.SandboxID != sandbox || !bytes.Equal(r.Digest, w.Digest) || !bytes.Equal(r.PCR, w.PCR) || r.End != w.End {
				t.Fatalf("%s: sandbox record %+v, want %+v", what, r, w)
			}
		}
		return v
	}

	// The first verified log: records 0-2.
	got, err := s.AdvanceLaunchPrefix(ctx, prefixOf(n.ID, recs, 3, 7, 1, 100), recs[:3])
	must(t, err)
	if got.Events != 3 || got.ResetCount != 7 || got.RestartCount != 1 || got.Clock != 100 || got.UpdatedAt.IsZero() {
		t.Fatalf("stored %+v", got)
	}
	v := check("first", 0, "b", 3, make([]byte, 32), 1)
	if !v.Prefix.SameBoot(7, 1) || v.Prefix.SameBoot(7, 2) || v.Prefix.SameBoot(8, 1) {
		t.Fatal("SameBoot")
	}
	check("PCR after 2", 2, "", 3, recs[1].PCR)
	check("PCR after all", 3, "zz", 3, recs[2].PCR)
	check("PCR past the prefix", 4, "", 3, nil)

	// Forward, overlapping what is stored: records 1-4 add 3 and 4.
	got, err = s.AdvanceLaunchPrefix(ctx, prefixOf(n.ID, recs, 5, 7, 1, 120), recs[1:5])
	must(t, err)
	if got.Events != 5 || got.Clock != 120 {
		t.Fatalf("advanced to %+v", got)
	}
	check("advanced", 4, "b", 5, recs[3].PCR, 1, 4)
	// Backward (a slower concurrent attestation): nothing changes.
	got, err = s.AdvanceLaunchPrefix(ctx, prefixOf(n.ID, recs, 4, 7, 1, 110), recs[:4])
	must(t, err)
	if got.Events != 5 {
		t.Fatalf("a shorter prefix changed the stored one: %+v", got)
	}
	// A gap after the stored prefix, and a record that disagrees with it.
	_, err = s.AdvanceLaunchPrefix(ctx, prefixOf(n.ID, recs, 7, 7, 1, 130), recs[6:7])
	wantErr(t, "gap", err, store.ErrConflict)
	forged := append([]store.PrefixRecord(nil), recs[4:7]...)
	forged[0].PCR = random(t, 32)
	_, err = s.AdvanceLaunchPrefix(ctx, prefixOf(n.ID, recs, 7, 7, 1, 130), forged)
	wantErr(t, "disagreeing record", err, store.ErrConflict)
	check("after refusals", 5, "f", 5, recs[4].PCR)

	// A new boot cycle must start at record 0, and replaces every record
	// (the TPM clock may have gone back: it orders nothing).
	other := prefixChain(t, []string{"x", "y"})
	_, err = s.AdvanceLaunchPrefix(ctx, prefixOf(n.ID, other, 2, 8, 0, 20), other[1:])
	wantErr(t, "new boot from record 1", err, store.ErrConflict)
	got, err = s.AdvanceLaunchPrefix(ctx, prefixOf(n.ID, other, 2, 8, 0, 20), other)
	must(t, err)
	if got.Events != 2 || !got.SameBoot(8, 0) || got.Clock != 20 {
		t.Fatalf("new boot: %+v", got)
	}
	recs = other
	check("new boot", 1, "b", 2, other[0].PCR)
	check("new boot", 2, "y", 2, other[1].PCR, 1)

	// Malformed input.
	for name, c := range map[string]struct {
		p    store.LaunchPrefix
		recs []store.PrefixRecord
	}{
		"no records":      {prefixOf(n.ID, other, 2, 8, 0, 200), nil},
		"no node":         {prefixOf("", other, 2, 8, 0, 200), other},
		"short PCR":       {store.LaunchPrefix{NodeID: n.ID, Events: 2, PCR: other[1].PCR[:31]}, other},
		"wrong end":       {prefixOf(n.ID, other, 1, 8, 0, 200), other},
		"PCR not last":    {store.LaunchPrefix{NodeID: n.ID, Events: 2, PCR: other[0].PCR}, other},
		"not contiguous":  {prefixOf(n.ID, other, 2, 8, 0, 200), []store.PrefixRecord{other[1], other[1]}},
		"empty sandbox":   {prefixOf(n.ID, other, 2, 8, 0, 200), []store.PrefixRecord{other[0], {RecNum: 1, Digest: other[1].Digest, PCR: other[1].PCR}}},
		"NUL in sandbox":  {prefixOf(n.ID, other, 2, 8, 0, 200), []store.PrefixRecord{other[0], {RecNum: 1, SandboxID: "a\x00b", Digest: other[1].Digest, PCR: other[1].PCR}}},
		"short digest":    {prefixOf(n.ID, other, 2, 8, 0, 200), []store.PrefixRecord{other[0], {RecNum: 1, SandboxID: "y", Digest: other[1].Digest[:3], PCR: other[1].PCR}}},
		"more than there": {store.LaunchPrefix{NodeID: n.ID, Events: 1, PCR: other[1].PCR}, other},
	} {
		_, err := s.AdvanceLaunchPrefix(ctx, c.p, c.recs)
		wantErr(t, name, err, store.ErrInvalid)
	}

	// Deleting the node deletes its prefix.
	must(t, s.DeleteNode(ctx, n.ID))
	_, err = s.ReadLaunchPrefix(ctx, n.ID, 0, "")
	wantErr(t, "read after delete", err, store.ErrNotFound)
	must(t, s.CreateNode(ctx, n))
	_, err = s.ReadLaunchPrefix(ctx, n.ID, 0, "y")
	wantErr(t, "read after re-enrollment", err, store.ErrNotFound)
}

// testLaunchPrefixRace: concurrent attestations of one host advance its
// prefix to different lengths at once, each from record 0 (first
// attestations) or from where it read (later ones): the stored prefix ends
// as the longest, every record in place.
func testLaunchPrefixRace(t *testing.T, s store.Store) {
	ctx := context.Background()
	n := NewNode(t)
	must(t, s.CreateNode(ctx, n))
	ids := make([]string, 40)
	for i := range ids {
		ids[i] = fmt.Sprintf("sandbox-%02d", i)
	}
	recs := prefixChain(t, ids)
	var wg sync.WaitGroup
	errs := make(chan error, len(recs))
	start := make(chan struct{})
	for i := 1; i <= len(recs); i++ {
		wg.Go(func() {
			<-start
			from := 0
			if i > 20 {
				from = i / 2
			}
			_, err := s.AdvanceLaunchPrefix(ctx, prefixOf(n.ID, recs, i, 3, 0, uint64(i)), recs[from:i])
			if err != nil && i > 20 {
				// Started past what is stored: a gap until the others catch up.
				_, err = s.AdvanceLaunchPrefix(ctx, prefixOf(n.ID, recs, i, 3, 0, uint64(i)), recs[:i])
			}
			if err != nil {
				errs <- fmt.Errorf("advance to %d: %w", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, r := range recs {
		v, err := s.ReadLaunchPrefix(ctx, n.ID, uint64(i+1), r.SandboxID)
		must(t, err)
		if v.Prefix.Events != uint64(len(recs)) || !bytes.Equal(v.PCRAt, r.PCR) || len(v.Sandbox) != 1 || !bytes.Equal(v.Sandbox[0].Digest, r.Digest) {
			t.Fatalf("record %d after the race: prefix %d events, PCR %x, %d sandbox records", i, v.Prefix.Events, v.PCRAt, len(v.Sandbox))
		}
	}
}
