package fsutil

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadFileLimit(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		path  string
		limit int64
		want  string // "" = success
	}{
		{"fits", p, 5, ""},
		{"too large", p, 4, "larger than the 4 byte limit"},
		{"directory", dir, 100, "not a regular file"},
		{"missing", filepath.Join(dir, "nope"), 100, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := ReadFileLimit(tc.path, tc.limit)
			if tc.want == "" {
				if err != nil || string(b) != "12345" {
					t.Fatalf("got %q, %v", b, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := ReadFileLimit(filepath.Join(dir, "nope"), 1); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file error does not match os.ErrNotExist: %v", err)
	}
}

func TestWriteFileAtomicAndNew(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := WriteFileNew(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	if err := WriteFileNew(p, []byte("two"), 0o600); !errors.Is(err, os.ErrExist) {
		t.Fatalf("WriteFileNew over an existing file: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Fatalf("existing file changed: %q", b)
	}
	if err := WriteFileAtomic(p, []byte("three"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "three" {
		t.Fatalf("content %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary files left behind: %v", ents)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing-dir", "x"), nil, 0o600); err == nil {
		t.Fatal("wrote into a missing directory")
	}
}

// TestWriteOntoADirectory: the error names the caller's path and says what
// is wrong, not the temporary file's name.
func TestWriteOntoADirectory(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "out")
	os.Mkdir(sub, 0o700)
	for name, write := range map[string]func(string, []byte, os.FileMode) error{"atomic": WriteFileAtomic, "new": WriteFileNew} {
		err := write(sub, []byte("x"), 0o600)
		if err == nil || !strings.Contains(err.Error(), "writing "+sub+": it is a directory") || strings.Contains(err.Error(), ".tmp") {
			t.Errorf("%s onto a directory: %v", name, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
}

func TestLockExcludesAndHonoursContext(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	unlock, err := Lock(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Lock(ctx, p); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lock while held: %v, want the context's deadline", err)
	}
	unlock()
	again, err := Lock(context.Background(), p)
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	again()
}
