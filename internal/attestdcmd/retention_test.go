package attestdcmd

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/bulwark-project/bulwark/internal/attestd"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/internal/store/storetest"
	"github.com/bulwark-project/bulwark/token"
)

var tRet = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// retainedData makes a data directory whose store had 40 attestations
// (records 1..40, a minute apart, a checkpoint after every 10) and was
// purged by retention through record 26. It returns the directory, a
// copy of the checkpoint file taken before the purge, and the store's
// records as they were.
func retainedData(t *testing.T) (string, string, []store.AuditRecord) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := embedded.Open(ctx, filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tokens, err := token.LoadOrCreateKey(filepath.Join(dir, token.KeyFile), nil)
	if err != nil {
		t.Fatal(err)
	}
	cps := attestd.NewCheckpoints(filepath.Join(dir, attestd.CheckpointFile), tokens, nil)
	for i := range 4 {
		storetest.RecordAttestations(t, st, 10, tRet.Add(time.Duration(10*i)*time.Minute), time.Minute)
		if _, err := cps.Record(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	all, err := st.ReadAudit(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	before := filepath.Join(t.TempDir(), "checkpoints-before.jsonl")
	if b, err := os.ReadFile(filepath.Join(dir, attestd.CheckpointFile)); err != nil || os.WriteFile(before, b, 0o600) != nil {
		t.Fatal(err)
	}
	r := &attestd.Retainer{Store: st, Tokens: tokens, Checkpoints: cps, Retention: time.Hour,
		Now: func() time.Time { return tRet.Add(85*time.Minute + 30*time.Second) }}
	if p, err := r.Round(ctx); err != nil || p.Audit != 26 {
		t.Fatalf("retention round: %+v, %v", p, err)
	}
	return dir, before, all
}

// TestAuditVerifyAfterRetention: `attestd audit verify` verifies what
// retention kept, from its seal; --since verifies from a signed
// checkpoint, strictly parsed, and refuses one attestd did not sign, one
// that does not match, or one that retention purged; a record removed
// from the kept range is reported either way.
func TestAuditVerifyAfterRetention(t *testing.T) {
	dir, before, all := retainedData(t)
	cp := func(seq int) string { return store.Checkpoint{Seq: uint64(seq), Hash: all[seq-1].Hash}.String() }
	hex64 := strings.Repeat("ab", 32)

	code, out, errs := runAttestd(t, "", "audit", "verify", "--data", dir)
	if code != 0 || !strings.Contains(out, "audit log OK: 14 records (27..40), head "+cp(40)) ||
		!strings.Contains(out, "records up to 26 purged by retention under the seal "+cp(26)) {
		t.Fatalf("verify after retention: exit %d\n%s%s", code, out, errs)
	}
	m := regexp.MustCompile(`--since (\S+)`).FindStringSubmatch(out)
	if m == nil || m[1] != cp(40) {
		t.Fatalf("verify does not print the checkpoint to go on from (want %s):\n%s", cp(40), out)
	}

	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"since the last checkpoint", []string{"--since", cp(40)}, 0, "audit log OK: 1 records (40..40)"},
		{"since a checkpoint in the kept range", []string{"--since", cp(30)}, 0, "audit log OK: 11 records (30..40), head " + cp(40) + "; from checkpoint " + cp(30)},
		{"since the seal", []string{"--since", cp(26)}, 0, "audit log OK: 14 records (27..40)"},
		{"since a checkpoint retention purged", []string{"--since", cp(10), "--checkpoints", before}, 1, "checkpoint 10 is gone with the records after it up to 26 (sealed through 26): verify from the seal, " + cp(26)},
		{"since a checkpoint dropped with its records", []string{"--since", cp(10)}, 1, "--since " + cp(10) + ": unknown checkpoint: record 10 is neither among the"},
		{"since a record that was never checkpointed", []string{"--since", cp(35)}, 1, "unknown checkpoint: record 35"},
		{"since a checkpoint with another hash", []string{"--since", "30:" + hex64}, 1, "does not match the signed checkpoint of record 30 (" + cp(30) + ")"},
		{"since the seal with another hash", []string{"--since", "26:" + hex64}, 1, "does not match the retention seal of record 26 (" + cp(26) + ")"},
		{"since a checkpoint at the seal with another hash", []string{"--since", "30:" + hex64, "--checkpoints", before}, 1, "does not match the signed checkpoint of record 30"},
		{"since without a colon", []string{"--since", "30"}, 2, "want SEQ:HASH"},
		{"since with a short hash", []string{"--since", "30:abcd"}, 2, "hash must be 64 lowercase hex digits"},
		{"since with an uppercase hash", []string{"--since", "30:" + strings.ToUpper(hex64)}, 2, "hash must be 64 lowercase hex digits"},
		{"since with a leading zero", []string{"--since", "030:" + hex64}, 2, "is not a decimal number without sign or leading zeros"},
		{"since with a sign", []string{"--since", "+30:" + hex64}, 2, "is not a decimal number"},
		{"since with spaces", []string{"--since", " 30:" + hex64}, 2, "is not a decimal number"},
		{"since past uint64", []string{"--since", "99999999999999999999:" + hex64}, 2, "out of range"},
		{"since without data", []string{"--db", "postgres://a@127.0.0.1:1/b", "--since", cp(30)}, 2, "--since needs --data"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"audit", "verify"}, c.args...)
			if c.args[0] != "--db" {
				args = append(args, "--data", dir)
			}
			code, out, errs := runAttestd(t, "", args...)
			if code != c.code || !strings.Contains(out+errs, c.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s%s", code, c.code, c.want, out, errs)
			}
			if c.code != 0 && strings.Contains(out, "OK") {
				t.Fatalf("failed but says OK: %s", out)
			}
		})
	}

	// A record removed from the kept range is reported, by a full and by
	// an incremental verification from before it.
	db, err := bolt.Open(filepath.Join(dir, "store", embedded.File), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("audit")).Delete(binary.BigEndian.AppendUint64(nil, 33))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, args := range [][]string{{}, {"--since", cp(30)}, {"--allow-no-checkpoint"}} {
		code, out, errs := runAttestd(t, "", append([]string{"audit", "verify", "--data", dir}, args...)...)
		if code != 1 || !strings.Contains(errs, "audit log does NOT verify") || !strings.Contains(errs, "record 33") {
			t.Fatalf("record 33 removed, verify %v: exit %d\n%s%s", args, code, out, errs)
		}
	}
	// So is the record at the start of the kept range.
	db, err = bolt.Open(filepath.Join(dir, "store", embedded.File), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("audit")).Delete(binary.BigEndian.AppendUint64(nil, 27))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, args := range [][]string{{}, {"--since", cp(26)}} {
		code, out, errs := runAttestd(t, "", append([]string{"audit", "verify", "--data", dir}, args...)...)
		if code != 1 || !strings.Contains(errs, "audit chain broken at record 27") {
			t.Fatalf("record 27 removed, verify %v: exit %d\n%s%s", args, code, out, errs)
		}
	}
}

// TestStoreCompact: `attestd store compact` shrinks the store after
// retention, and refuses, saying why, while the store is open.
func TestStoreCompact(t *testing.T) {
	dir, _, _ := retainedData(t)
	st, err := embedded.Open(context.Background(), filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs := runAttestd(t, "", "store", "compact", "--data", dir)
	st.Close()
	if code != 1 || !strings.Contains(errs, "not compacted: attestd (or another process) is using the store in") || !strings.Contains(errs, "stop it") {
		t.Fatalf("compact while open: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runAttestd(t, "", "store", "compact", "--data", dir)
	if code != 0 || !regexp.MustCompile(`compacted .*attestd.db: [0-9.]+ MiB \(\d+ bytes\) -> [0-9.]+ MiB \(\d+ bytes\)`).MatchString(out) {
		t.Fatalf("compact: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := runAttestd(t, "", "audit", "verify", "--data", dir); code != 0 {
		t.Fatalf("verify after compaction: exit %d\n%s%s", code, out, errs)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "give --data DIR"},
		{[]string{"--data", t.TempDir()}, 1, "no attestd store at"},
		{[]string{"--data", dir, "extra"}, 2, `unexpected argument "extra"`},
	} {
		code, out, errs := runAttestd(t, "", append([]string{"store", "compact"}, c.args...)...)
		if code != c.code || !strings.Contains(out+errs, c.want) {
			t.Fatalf("store compact %v: exit %d, want %d with %q\n%s%s", c.args, code, c.code, c.want, out, errs)
		}
	}
}
