package launch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bulwarkv1 "github.com/bulwark-project/bulwark/api/bulwark/v1"
	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/internal/attestdtest"
	"github.com/bulwark-project/bulwark/measure"
	"github.com/bulwark-project/bulwark/tpm"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

// bigEvent is a launch event of about 60 KiB (a long command override):
// some 70 make a host log past 4 MiB, cheaply.
func bigEvent(id string) *measure.LaunchEvent {
	ev := event(id)
	for range 15 {
		ev.Args = append(ev.Args, strings.Repeat("x", 4000))
	}
	return ev
}

// enrolledHost is a real attestd and a host enrolled with it, whose TPM is
// a managed swtpm (the same TPM across opens, as a reboot needs).
func enrolledHost(t *testing.T, ctx context.Context) (*tpm.TPM, *attestclient.Client, string) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/swtpm"); err != nil {
		t.Skip("swtpm not installed (scripts/deps.sh)")
	}
	dir := filepath.Join(t.TempDir(), "swtpm")
	t.Cleanup(func() { tpm.StopManaged(dir) })
	spec := "swtpm:" + dir
	tp, err := tpm.Open(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tp.EKPublic(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := limits.NodeID(ek)
	tp.Close()
	allow := filepath.Join(t.TempDir(), "ek-allow")
	if err := os.WriteFile(allow, []byte(node+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := attestdtest.Start(t, "--ek-allow", allow)
	o := attestclient.Options{Addr: srv.Addr, CAFile: srv.CA()}
	if _, err := Enroll(ctx, spec, o); err != nil {
		t.Fatal(err)
	}
	if tp, err = tpm.Open(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	c, err := attestclient.Dial(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return tp, c, node
}

// TestHostLogPast4MiBAttestsIncrementally: a host's launch log grows past
// 4 MiB (it was capped there: the append failed) and every launch still
// attests, sending attestd only the records after the prefix it verified;
// a sandbox whose event is deep in the prefix attests too, and 20
// concurrent launches on the host all do. A whole log past 4 MiB is
// refused on the host, saying what to do.
func TestHostLogPast4MiBAttestsIncrementally(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tp, c, node := enrolledHost(t, ctx)
	hl := NewHostLog(t.TempDir(), limits.DefaultLaunchPCR)
	pcrs := []int{limits.DefaultLaunchPCR}
	attest := func(id string) (*bulwarkv1.AttestResponse, error) {
		return attestHost(ctx, c, hl, tp, pcrs, &bulwarkv1.AttestRequest{NodeId: node, SandboxId: id, OmitToken: true})
	}
	size := func() int64 {
		fi, err := os.Stat(hl.Path())
		if os.IsNotExist(err) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}

	i := 0
	for ; size() <= measure.MaxLogSize+measure.MaxRecordSize; i++ {
		id := fmt.Sprintf("sb-%03d", i)
		if _, err := hl.Append(ctx, tp, bigEvent(id)); err != nil {
			t.Fatalf("launch %d (log %d bytes): %v", i, size(), err)
		}
		if i%10 != 0 {
			continue // launches that never attested: the next sends them too
		}
		ar, err := attest(id)
		if err != nil {
			t.Fatalf("attest launch %d (log %d bytes): %v", i, size(), err)
		}
		if ar.GetAttestationId() == "" {
			t.Fatalf("attest launch %d: no verdict", i)
		}
	}
	t.Logf("host log: %d launches, %d bytes", i, size())
	for _, id := range []string{fmt.Sprintf("sb-%03d", i-1), "sb-000", "sb-037"} {
		if _, err := attest(id); err != nil {
			t.Fatalf("attest %s with a %d-byte log: %v", id, size(), err)
		}
	}

	// The whole log no longer fits one request: refused here, with advice.
	_, err := hl.QuoteWithLogAfter(ctx, tp, pcrs, make([]byte, 32), nil, "sb-000")
	if err == nil || !strings.Contains(err.Error(), "more than the 4194304 one attestation may carry") || !strings.Contains(err.Error(), "reboot the host") {
		t.Fatalf("whole log past 4 MiB: %v", err)
	}

	// 20 launches at once on this host: every one attests.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for j := range 20 {
		wg.Go(func() {
			id := fmt.Sprintf("concurrent-%02d", j)
			if _, err := hl.Append(ctx, tp, event(id)); err != nil {
				errs <- err
				return
			}
			if _, err := attest(id); err != nil {
				errs <- fmt.Errorf("%s: %w", id, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestAttestAfterRebootSendsTheWholeLog: after a TPM reset the host's new
// log is short and attestd's prefix is of the old one: the launch still
// attests (the host sees its log does not start with the prefix, or
// attestd says the prefix is void, and sends the whole log).
func TestAttestAfterRebootSendsTheWholeLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tp, c, node := enrolledHost(t, ctx)
	hl := NewHostLog(t.TempDir(), limits.DefaultLaunchPCR)
	pcrs := []int{limits.DefaultLaunchPCR}
	attest := func(tp *tpm.TPM, id string) error {
		_, err := attestHost(ctx, c, hl, tp, pcrs, &bulwarkv1.AttestRequest{NodeId: node, SandboxId: id, OmitToken: true})
		return err
	}
	for i := range 3 {
		id := fmt.Sprintf("boot1-%d", i)
		if _, err := hl.Append(ctx, tp, event(id)); err != nil {
			t.Fatal(err)
		}
		if err := attest(tp, id); err != nil {
			t.Fatal(err)
		}
	}
	spec := tp.Spec()
	tp.Close()
	if err := tpm.StopManaged(strings.TrimPrefix(spec.String(), "swtpm:")); err != nil {
		t.Fatal(err)
	}
	tp2, err := tpm.Open(ctx, spec.String())
	if err != nil {
		t.Fatal(err)
	}
	defer tp2.Close()
	for i := range 4 {
		id := fmt.Sprintf("boot2-%d", i)
		if _, err := hl.Append(ctx, tp2, event(id)); err != nil {
			t.Fatal(err)
		}
		if err := attest(tp2, id); err != nil {
			t.Fatalf("%s after the reboot: %v", id, err)
		}
	}
}
