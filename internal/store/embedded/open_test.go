package embedded_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/internal/store/storetest"
)

// OpenExisting opens a store that exists and creates nothing when
// it does not.
func TestOpenEmbeddedExisting(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	existing := filepath.Join(base, "existing")
	s, err := embedded.Open(ctx, existing, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := storetest.NewNode(t)
	if err := s.CreateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	s.Close()
	emptyDir := filepath.Join(base, "empty")
	os.Mkdir(emptyDir, 0o700)
	dirAsFile := filepath.Join(base, "dirasfile")
	os.MkdirAll(filepath.Join(dirAsFile, embedded.File), 0o700)

	cases := []struct {
		name    string
		dir     string
		wantErr error // nil: opens
	}{
		{"existing store", existing, nil},
		{"missing directory", filepath.Join(base, "nope", "store"), fs.ErrNotExist},
		{"directory without a store", emptyDir, fs.ErrNotExist},
		{"store path is a directory", dirAsFile, store.ErrInvalid},
		{"no directory", "", store.ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := embedded.OpenExisting(ctx, c.dir, store.Options{})
			if c.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if _, err := s.GetNode(ctx, n.ID); err != nil {
					t.Fatalf("node written before: %v", err)
				}
				return
			}
			if err == nil {
				s.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("%v, want %v", err, c.wantErr)
			}
			if c.wantErr == fs.ErrNotExist && !strings.Contains(err.Error(), filepath.Join(c.dir, embedded.File)) {
				t.Fatalf("%v does not name the store file", err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(base, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing directory created: %v", err)
	}
	if _, err := os.Stat(filepath.Join(emptyDir, embedded.File)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("store file created: %v", err)
	}
}
