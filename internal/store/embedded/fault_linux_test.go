package embedded_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

// smallTmpfs mounts a tmpfs of size bytes on a new temporary directory, or
// skips the test when it cannot (not root, no CAP_SYS_ADMIN).
func smallTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)+",mode=0700"); err != nil {
		t.Skipf("mounting a %d-byte tmpfs to fill (needs root or CAP_SYS_ADMIN): %v", size, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// fillFS writes a file in dir until the file system is full (ENOSPC).
func fillFS(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for i := 0; i < 1<<16; i++ { // bounded: 256 MiB, far above any test tmpfs
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
	t.Fatal("the tmpfs never filled up")
}

// TestEmbeddedGroupCommitAnswersOnlyDurable runs 16 writers (verdicts and
// audit records) on an embedded store on a small tmpfs until the file
// system is full. Group commit must answer each caller with its own
// transaction's outcome: every write answered OK is in the file afterwards
// (read from a copy of it, opened elsewhere), and a write whose group
// commit failed for lack of space is answered with that failure
// (ErrUnavailable, ENOSPC underneath), never OK.
func TestEmbeddedGroupCommitAnswersOnlyDurable(t *testing.T) {
	dir := smallTmpfs(t, 2<<20)
	ctx := context.Background()
	var grouped atomic.Int64 // commits that held more than one write
	s, err := embedded.Open(ctx, filepath.Join(dir, "store"), store.Options{
		OnCommit: func(writes int, _ time.Duration) {
			if writes > 1 {
				grouped.Add(1)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ek := []byte("group-commit-test-ek")
	n := store.Node{ID: limits.NodeID(ek), EKPublic: ek, AKPublic: []byte("ak"), AKName: []byte("name"), State: store.NodeActive}
	if err := s.CreateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	details := json.RawMessage(`{"pad":"` + strings.Repeat("x", 2000) + `"}`) // fills the tmpfs sooner
	var (
		mu     sync.Mutex
		acked  = map[uint64]string{} // seq → subject
		failed int
		wg     sync.WaitGroup
	)
	for g := range 16 {
		wg.Go(func() {
			for i := 0; i < 5000; i++ {
				var rec store.AuditRecord
				var err error
				if i%2 == 0 {
					rec, err = s.RecordAttestation(ctx, store.Attestation{ID: fmt.Sprintf("att-%d-%d", g, i), NodeID: n.ID, Policy: "p"})
				} else {
					rec, err = s.AppendAudit(ctx, store.AuditEntry{Kind: store.KindRelease, Subject: fmt.Sprintf("rel-%d-%d", g, i), Details: details})
				}
				mu.Lock()
				if err != nil {
					failed++
					mu.Unlock()
					if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, syscall.ENOSPC) {
						t.Errorf("writer %d: %v, want ErrUnavailable wrapping ENOSPC", g, err)
					}
					return
				}
				acked[rec.Seq] = rec.Subject
				mu.Unlock()
			}
			t.Errorf("writer %d: 5000 writes and the tmpfs is not full", g)
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatal(err)
	}
	if t.Failed() {
		return
	}
	if failed != 16 || len(acked) < 100 || grouped.Load() == 0 {
		t.Fatalf("%d writes acknowledged, %d writers failed, %d commits grouped writes: the test did not exercise group commit up to a full disk", len(acked), failed, grouped.Load())
	}

	// What the full file system holds, opened where there is room.
	cp := filepath.Join(t.TempDir(), "store")
	if err := os.MkdirAll(cp, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "store", embedded.File))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cp, embedded.File), b, 0o600); err != nil {
		t.Fatal(err)
	}
	s2, err := embedded.Open(ctx, cp, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	res, err := store.VerifyAudit(ctx, s2, store.VerifyOptions{})
	if err != nil {
		t.Fatalf("chain after the disk filled: %v", err)
	}
	for seq, subj := range acked {
		recs, err := s2.ReadAudit(ctx, seq-1, 1)
		if err != nil || len(recs) != 1 || recs[0].Subject != subj {
			t.Fatalf("acknowledged record %d (%s) not in the file: %v %v", seq, subj, recs, err)
		}
		if strings.HasPrefix(subj, "att-") {
			if _, err := s2.GetAttestation(ctx, subj); err != nil {
				t.Fatalf("acknowledged verdict %s not in the file: %v", subj, err)
			}
		}
	}
	t.Logf("%d writes acknowledged, all in the file (%d records); %d commits grouped writes; 16 writers refused ENOSPC", len(acked), res.Records, grouped.Load())
}
