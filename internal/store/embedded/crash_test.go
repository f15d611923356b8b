package embedded_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

const crashEnv = "BULWARK_STORE_CRASH_CHILD"

// TestEmbeddedCrashKeepsAcknowledged kills (SIGKILL) a process that writes
// verdicts and audit records from many goroutines, then checks that every
// write the process had acknowledged is in the reopened store and that the
// chain verifies, and that the node's last verdict is the newest verdict
// in the chain. It proves no write is acknowledged before its group
// commit; power-loss durability additionally rests on bbolt's fsync.
func TestEmbeddedCrashKeepsAcknowledged(t *testing.T) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("spawns and kills a writer process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestEmbeddedCrashKeepsAcknowledged$")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[uint64]string{} // seq → subject
	sc := bufio.NewScanner(out)
	deadline := time.Now().Add(60 * time.Second)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "ack" {
			continue
		}
		seq, _ := strconv.ParseUint(f[1], 10, 64)
		acked[seq] = f[2]
		if len(acked) >= 400 || time.Now().After(deadline) {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if len(acked) < 50 {
		t.Fatalf("child acknowledged only %d writes", len(acked))
	}
	ctx := context.Background()
	s, err := embedded.Open(ctx, dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res, err := store.VerifyAudit(ctx, s, store.VerifyOptions{})
	if err != nil {
		t.Fatalf("chain after crash: %v", err)
	}
	for seq, subj := range acked {
		if seq > res.Head.Seq {
			t.Fatalf("acknowledged record %d lost: log ends at %d", seq, res.Head.Seq)
		}
		recs, err := s.ReadAudit(ctx, seq-1, 1)
		if err != nil || len(recs) != 1 || recs[0].Subject != subj {
			t.Fatalf("acknowledged record %d (%s) not found after crash: %v %v", seq, subj, recs, err)
		}
		if strings.HasPrefix(subj, "att-") {
			if _, err := s.GetAttestation(ctx, subj); err != nil {
				t.Fatalf("acknowledged verdict %s lost: %v", subj, err)
			}
		}
	}
	// The node's last verdict survives the crash too (appended to the last
	// verdict log, folded by this open): it is the newest verdict of the
	// audit chain, which its transaction also wrote.
	var newest string
	for after := uint64(0); after < res.Head.Seq; {
		recs, err := s.ReadAudit(ctx, after, 1000)
		if err != nil || len(recs) == 0 {
			t.Fatalf("reading the audit log after %d: %v", after, err)
		}
		for _, r := range recs {
			if strings.HasPrefix(r.Subject, "att-") {
				newest = r.Subject
			}
			after = r.Seq
		}
	}
	nodes, err := s.ListNodes(ctx)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("nodes after crash: %v %v", nodes, err)
	}
	if lv := nodes[0].LastVerdict; newest != "" && (lv == nil || lv.AttestationID != newest) {
		t.Fatalf("last verdict after crash %+v, want the newest audited verdict %s", lv, newest)
	}
	t.Logf("%d acknowledged writes all present after SIGKILL; log has %d records", len(acked), res.Records)
}

// crashChild writes until killed, printing "ack SEQ SUBJECT" after each
// acknowledged write.
func crashChild(dir string) {
	ctx := context.Background()
	s, err := embedded.Open(ctx, dir, store.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ek := []byte(fmt.Sprintf("crash-test-ek-%d", time.Now().UnixNano()))
	n := store.Node{ID: limits.NodeID(ek), EKPublic: ek, AKPublic: []byte("ak"), AKName: []byte("name"), State: store.NodeActive}
	if err := s.CreateNode(ctx, n); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				var rec store.AuditRecord
				var err error
				if i%2 == 0 {
					rec, err = s.RecordAttestation(ctx, store.Attestation{ID: fmt.Sprintf("att-%d-%d", g, i), NodeID: n.ID, Policy: "p"})
				} else {
					rec, err = s.AppendAudit(ctx, store.AuditEntry{Kind: store.KindRelease, Subject: fmt.Sprintf("rel-%d-%d", g, i)})
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "ack %d %s\n", rec.Seq, rec.Subject)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}
