package store_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/storetest"
)

const secretPW = "SuperSecretPW"

// A DSN that is not a postgres:// URL is refused, without repeating it
// (it may hold a password), and without creating a directory named after
// it: Open used to take anything else for an embedded store path.
func TestDSNMustBePostgresURL(t *testing.T) {
	cases := []struct {
		dsn      string
		ok       bool // CheckDSN accepts it
		openPath bool // Open takes it for an embedded store directory
	}{
		{dsn: "postgres://attestd@db.example/attestd", ok: true},
		{dsn: "postgresql://attestd:" + secretPW + "@db.example/attestd?sslmode=verify-full", ok: true},
		{dsn: "host=127.0.0.1 user=a password=" + secretPW + " dbname=b"},
		{dsn: "password=" + secretPW},
		{dsn: "mysql://root:" + secretPW + "@db/attestd"},
		{dsn: "POSTGRES://a:" + secretPW + "@db/attestd"},
		{dsn: "postgres:/a:" + secretPW + "@db/attestd"}, // one slash: no URL
		{dsn: "garbage", openPath: true},
		{dsn: ""},
	}
	for _, c := range cases {
		t.Run(c.dsn, func(t *testing.T) {
			err := store.CheckDSN(c.dsn)
			if c.ok {
				if err != nil || !store.IsPostgresURL(c.dsn) {
					t.Fatalf("CheckDSN: %v", err)
				}
				return
			}
			if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), "postgres://") {
				t.Fatalf("CheckDSN: %v, want ErrInvalid naming postgres://", err)
			}
			// OpenDSN refuses it before anything: nothing appears in the
			// working directory.
			cwd := t.TempDir()
			t.Chdir(cwd)
			s, err := store.OpenDSN(context.Background(), c.dsn, store.Options{})
			if err == nil {
				s.Close()
				t.Fatal("OpenDSN accepted it")
			}
			if !errors.Is(err, store.ErrInvalid) || strings.Contains(err.Error(), secretPW) {
				t.Fatalf("OpenDSN: %v (want ErrInvalid, no password)", err)
			}
			if !c.openPath {
				s, err := store.Open(context.Background(), c.dsn, store.Options{})
				if err == nil {
					s.Close()
					t.Fatal("Open took it for a directory")
				}
				if c.dsn != "" && (!errors.Is(err, store.ErrInvalid) || strings.Contains(err.Error(), secretPW)) {
					t.Fatalf("Open: %v (want ErrInvalid, no password)", err)
				}
			}
			if ents, _ := os.ReadDir(cwd); len(ents) != 0 {
				t.Fatalf("created %s in the working directory", ents[0].Name())
			}
		})
	}
}

// OpenEmbeddedExisting opens a store that exists and creates nothing when
// it does not.
func TestOpenEmbeddedExisting(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	existing := filepath.Join(base, "existing")
	s, err := store.OpenEmbedded(ctx, existing, store.Options{})
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
	os.MkdirAll(filepath.Join(dirAsFile, store.EmbeddedFile), 0o700)

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
			s, err := store.OpenEmbeddedExisting(ctx, c.dir, store.Options{})
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
			if c.wantErr == fs.ErrNotExist && !strings.Contains(err.Error(), filepath.Join(c.dir, store.EmbeddedFile)) {
				t.Fatalf("%v does not name the store file", err)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(base, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing directory created: %v", err)
	}
	if _, err := os.Stat(filepath.Join(emptyDir, store.EmbeddedFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("store file created: %v", err)
	}
}
