package launch

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

func openSim(t *testing.T) *tpm.TPM {
	t.Helper()
	tp, err := tpm.Open(context.Background(), "sim")
	if err != nil {
		t.Skipf("in-process TPM simulator unavailable (needs cgo and libssl-dev): %v", err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

func event(id string) *measure.LaunchEvent {
	d := measure.DigestBytes(measure.SHA256, []byte(id))
	return &measure.LaunchEvent{
		SandboxID: id, Policy: "p", Kernel: d, Cmdline: "console=ttyS0",
		CmdlineDigest:  measure.DigestCmdline(measure.SHA256, "console=ttyS0"),
		GuestPublicKey: make([]byte, 32), Time: time.Unix(1700000000, 0).UTC(),
	}
}

func TestHostLogStaysInStepWithTheTPM(t *testing.T) {
	ctx := context.Background()
	tp := openSim(t)
	dir := t.TempDir()
	hl := NewHostLog(dir, limits.DefaultLaunchPCR)

	// Concurrent launchers keep the log and the PCR in step.
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := hl.Append(ctx, tp, event(fmt.Sprintf("sb-%d", i)))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(hl.Path())
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := tp.ReadPCRs(ctx, limits.DefaultLaunchPCR)
	if err != nil {
		t.Fatal(err)
	}
	vl, err := measure.VerifyLog(data, limits.DefaultLaunchPCR, measure.SHA256, pcrs[limits.DefaultLaunchPCR])
	if err != nil {
		t.Fatalf("log does not replay to the TPM's PCR: %v", err)
	}
	if len(vl.Records()) != 6 {
		t.Fatalf("%d records, want 6", len(vl.Records()))
	}

	// Something else extends the launch PCR: the next launch is refused.
	junk := sha256.Sum256([]byte("not a launch"))
	if err := tp.Extend(ctx, limits.DefaultLaunchPCR, junk[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := hl.Append(ctx, tp, event("after-junk")); err == nil || !strings.Contains(err.Error(), "something else extended") {
		t.Fatalf("append after a foreign extend: %v", err)
	}

	// A reset TPM (a fresh simulator: PCRs are zero) archives the old log
	// and starts a new one. The simulator is one per process: close first.
	tp.Close()
	fresh := openSim(t)
	out, err := hl.Append(ctx, fresh, event("after-reboot"))
	if err != nil {
		t.Fatal(err)
	}
	lg, err := measure.ParseLog(out)
	if err != nil || lg.Len() != 1 {
		t.Fatalf("new log after reset: %v, %d records", err, lg.Len())
	}
	archived, _ := filepath.Glob(hl.Path() + ".2*")
	if len(archived) != 1 {
		t.Fatalf("old log not archived: %v", archived)
	}

	// A damaged log is refused, not overwritten.
	if err := os.WriteFile(hl.Path(), append(out, 0xff), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := hl.Append(ctx, fresh, event("x")); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("append to a damaged log: %v", err)
	}
}

// TestHostLogArchivesNeverOverwrite: two TPM resets within one second each
// archive their log; the second archive does not replace the first.
func TestHostLogArchivesNeverOverwrite(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	hl := NewHostLog(dir, limits.DefaultLaunchPCR)
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	hl.now = func() time.Time { return at }

	// Each fresh simulator is a reset TPM: one launch per boot, three boots.
	var logs [][]byte
	for i := range 3 {
		tp := openSim(t)
		out, err := hl.Append(ctx, tp, event(fmt.Sprintf("boot-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, out)
		tp.Close()
	}
	archived, err := filepath.Glob(hl.Path() + ".2*")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{hl.Path() + ".20261204T100000Z", hl.Path() + ".20261204T100000Z.1"}
	if strings.Join(archived, ",") != strings.Join(want, ",") {
		t.Fatalf("archives %v, want %v", archived, want)
	}
	for i, name := range want {
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(logs[i]) {
			t.Fatalf("archive %s does not hold boot %d's log", name, i)
		}
	}
}

// TestConcurrentLaunchesQuoteTheirLog: 20 launches on one host append and
// then quote at the same time, as concurrent 'launcher run's do. Each gets
// a log that replays to the PCR value its quote carries and holds its own
// event (attestd's check); before QuoteWithLog a launch sent the log as of
// its own append, which a later launch's extend had already overtaken.
func TestConcurrentLaunchesQuoteTheirLog(t *testing.T) {
	ctx := context.Background()
	tp := openSim(t)
	hl := NewHostLog(t.TempDir(), limits.DefaultLaunchPCR)
	const n = 20
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("sandbox-%02d", i)
			if _, err := hl.Append(ctx, tp, event(id)); err != nil {
				errs <- err
				return
			}
			nonce := sha256.Sum256([]byte(id))
			logBytes, q, err := hl.QuoteWithLog(ctx, tp, []int{limits.DefaultLaunchPCR}, nonce[:])
			if err != nil {
				errs <- err
				return
			}
			vl, err := measure.VerifyLog(logBytes, limits.DefaultLaunchPCR, measure.SHA256, q.PCRs[limits.DefaultLaunchPCR])
			if err != nil {
				errs <- fmt.Errorf("%s: the log sent with the quote does not replay to it: %w", id, err)
				return
			}
			if _, err := vl.BySandbox(id); err != nil {
				errs <- fmt.Errorf("%s: %w", id, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestHostLogEnd: END records go into the log and the PCR in step, once
// per sandbox, only for sandboxes this log launched; the sandbox's own
// launch record (not its END) is what an incremental quote sends.
func TestHostLogEnd(t *testing.T) {
	ctx := context.Background()
	tp := openSim(t)
	hl := NewHostLog(t.TempDir(), limits.DefaultLaunchPCR)
	for _, id := range []string{"sb-a", "sb-b"} {
		if _, err := hl.Append(ctx, tp, event(id)); err != nil {
			t.Fatal(err)
		}
	}
	// sb-x was never launched here (an earlier boot cycle's): passed over.
	n, err := hl.End(ctx, tp, measure.EndStopped, "sb-a", "sb-x")
	if err != nil || n != 1 {
		t.Fatalf("End: %d, %v; want 1 END", n, err)
	}
	if n, err := hl.End(ctx, tp, measure.EndLost, "sb-a", "sb-b"); err != nil || n != 1 {
		t.Fatalf("End again: %d, %v; want only sb-b's", n, err)
	}
	if _, err := hl.End(ctx, tp, "crashed", "sb-c"); err != nil {
		t.Fatalf("End of an unknown sandbox: %v", err)
	}
	data, err := os.ReadFile(hl.Path())
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := tp.ReadPCRs(ctx, limits.DefaultLaunchPCR)
	if err != nil {
		t.Fatal(err)
	}
	vl, err := measure.VerifyLog(data, limits.DefaultLaunchPCR, measure.SHA256, pcrs[limits.DefaultLaunchPCR])
	if err != nil {
		t.Fatalf("log with END records does not replay to the TPM's PCR: %v", err)
	}
	var got []string
	for _, r := range vl.Records() {
		if r.End != nil {
			got = append(got, r.End.SandboxID+":"+r.End.Reason)
		}
	}
	if strings.Join(got, ",") != "sb-a:stopped,sb-b:lost" {
		t.Fatalf("END records %v", got)
	}
	// A quote for sb-a after attestd verified the whole log sends sb-a's
	// launch record, not its END.
	q, err := hl.QuoteWithLogAfter(ctx, tp, []int{limits.DefaultLaunchPCR}, make([]byte, 32), prefixOf(t, vl), "sb-a")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := measure.ParseRecord(q.SandboxRecord)
	if err != nil || rec.Event == nil || rec.RecNum != 0 {
		t.Fatalf("sandbox record for sb-a: %+v, %v", rec, err)
	}
}

// prefixOf is the prefix attestd would announce after verifying vl.
func prefixOf(t *testing.T, vl *measure.VerifiedLog) *bulwarkv1.LaunchLogPrefix {
	t.Helper()
	steps, err := measure.ReplaySteps(vl.Records(), measure.SHA256, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &bulwarkv1.LaunchLogPrefix{Events: uint64(len(steps)), PcrValue: steps[len(steps)-1]}
}
