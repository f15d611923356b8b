package embedded_test

import (
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
)

// TestEmbeddedDiskFull runs the embedded store on a small tmpfs, fills the
// file system and checks that the write that no longer fits fails with
// ErrUnavailable (and ENOSPC underneath), and that reads keep working.
func TestEmbeddedDiskFull(t *testing.T) {
	dir := smallTmpfs(t, 1<<20)
	ctx := context.Background()
	s, err := embedded.Open(ctx, filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sec := store.Secret{SecretMeta: store.SecretMeta{Name: "small", Version: 1, Size: 1}, Ciphertext: []byte("x")}
	if err := s.PutSecret(ctx, sec, 0); err != nil {
		t.Fatal(err)
	}
	fillFS(t, dir)
	big := store.Secret{SecretMeta: store.SecretMeta{Name: "big", Version: 1, Size: 512 << 10}, Ciphertext: make([]byte, 512<<10)}
	err = s.PutSecret(ctx, big, 0)
	if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("PutSecret on a full disk: %v, want ErrUnavailable wrapping ENOSPC", err)
	}
	if got, err := s.GetSecret(ctx, "small"); err != nil || string(got.Ciphertext) != "x" {
		t.Fatalf("GetSecret after the failed write: %v, %v", got, err)
	}
}
