package attestd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulwark-project/bulwark/internal/store"
)

// TestAttestDiskFullIsUnavailable runs attestd's embedded store on a small
// tmpfs and fills it: the attestation whose verdict no longer fits is
// answered Unavailable (retryable: store down), not Internal.
func TestAttestDiskFullIsUnavailable(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(2<<20)+",mode=0700"); err != nil {
		t.Skipf("mounting a small tmpfs to fill (needs root or CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	p := newInprocAt(t, filepath.Join(dir, "store"), store.Options{}, nil)
	ctx := context.Background()
	if _, err := p.srv.Attest(ctx, p.request(t)); err != nil {
		t.Fatalf("Attest before the disk filled: %v", err)
	}
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for i := 0; ; i++ {
		if i == 1<<16 {
			t.Fatal("the tmpfs never filled up")
		}
		if _, err := f.Write(chunk); errors.Is(err, syscall.ENOSPC) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	// Pages bbolt freed before may still take a few verdicts; the store
	// only grows (audit records are kept), so a bounded number of
	// attestations reaches the full disk.
	for i := 0; i < 1000; i++ {
		_, err := p.srv.Attest(ctx, p.request(t))
		if err == nil {
			continue
		}
		if got := status.Code(err); got != codes.Unavailable {
			t.Fatalf("Attest on a full disk: %v (%v), want Unavailable", got, err)
		}
		return
	}
	t.Fatal("1000 attestations fitted on a full disk")
}
