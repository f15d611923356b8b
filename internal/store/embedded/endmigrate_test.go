package embedded

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"

	"github.com/bulwark-project/bulwark/internal/store"
	bolt "go.etcd.io/bbolt"
)

// endTestChain is a verified launch log as attestd keeps it: a launch of
// "sb" and, when withEnd, its END record.
func endTestChain(withEnd bool) []store.PrefixRecord {
	pcr := make([]byte, 32)
	var out []store.PrefixRecord
	for i := range 2 {
		if i == 1 && !withEnd {
			break
		}
		d := bytes.Repeat([]byte{byte(i + 1)}, 32)
		h := sha256.Sum256(append(bytes.Clone(pcr), d...))
		pcr = h[:]
		out = append(out, store.PrefixRecord{RecNum: uint64(i), SandboxID: "sb", Digest: d, PCR: pcr, End: i == 1})
	}
	return out
}

// TestMigrateSchema2: a version-2 file (before END records) opens as
// version 3; its launch records read back as launch events, and an END
// record stored after reads back as one.
func TestMigrateSchema2(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := cacheTestStore(t, dir)
	n := cacheTestNode(t)
	if err := s.CreateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	recs := endTestChain(true)
	if _, err := s.AdvanceLaunchPrefix(ctx, store.LaunchPrefix{NodeID: n.ID, Events: 1, PCR: recs[0].PCR}, recs[:1]); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bktMeta).Put([]byte("schema"), []byte("2")) }); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = cacheTestStore(t, dir)
	if v := rawBucket(t, s, bktMeta, "schema"); string(v) != schemaVersion {
		t.Fatalf("schema after open = %q, want %s", v, schemaVersion)
	}
	v, err := s.ReadLaunchPrefix(ctx, n.ID, 1, "sb")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Sandbox) != 1 || v.Sandbox[0].End {
		t.Fatalf("migrated records of sb: %+v", v.Sandbox)
	}
	if _, err := s.AdvanceLaunchPrefix(ctx, store.LaunchPrefix{NodeID: n.ID, Events: 2, PCR: recs[1].PCR}, recs); err != nil {
		t.Fatal(err)
	}
	if v, err = s.ReadLaunchPrefix(ctx, n.ID, 2, "sb"); err != nil {
		t.Fatal(err)
	}
	if len(v.Sandbox) != 2 || v.Sandbox[0].End || !v.Sandbox[1].End {
		t.Fatalf("records of sb after its END: %+v", v.Sandbox)
	}
}
