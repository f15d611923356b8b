package postgres_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/postgres"
)

const secretPW = "SuperSecretPW"

// A DSN that is not a postgres:// URL is refused, without repeating it
// (it may hold a password), and without creating a directory named after
// it: store.Open once took anything else for an embedded store path.
func TestDSNMustBePostgresURL(t *testing.T) {
	cases := []struct {
		dsn string
		ok  bool // CheckDSN accepts it
	}{
		{dsn: "postgres://attestd@db.example/attestd", ok: true},
		{dsn: "postgresql://attestd:" + secretPW + "@db.example/attestd?sslmode=verify-full", ok: true},
		{dsn: "host=127.0.0.1 user=a password=" + secretPW + " dbname=b"},
		{dsn: "password=" + secretPW},
		{dsn: "mysql://root:" + secretPW + "@db/attestd"},
		{dsn: "POSTGRES://a:" + secretPW + "@db/attestd"},
		{dsn: "postgres:/a:" + secretPW + "@db/attestd"}, // one slash: no URL
		{dsn: "garbage"},
		{dsn: ""},
	}
	for _, c := range cases {
		t.Run(c.dsn, func(t *testing.T) {
			err := postgres.CheckDSN(c.dsn)
			if c.ok {
				if err != nil || !postgres.IsPostgresURL(c.dsn) {
					t.Fatalf("CheckDSN: %v", err)
				}
				return
			}
			if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), "postgres://") {
				t.Fatalf("CheckDSN: %v, want ErrInvalid naming postgres://", err)
			}
			// Open refuses it before anything: nothing appears in the
			// working directory.
			cwd := t.TempDir()
			t.Chdir(cwd)
			s, err := postgres.Open(context.Background(), c.dsn, store.Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open accepted it")
			}
			if !errors.Is(err, store.ErrInvalid) || strings.Contains(err.Error(), secretPW) {
				t.Fatalf("Open: %v (want ErrInvalid, no password)", err)
			}
			if ents, _ := os.ReadDir(cwd); len(ents) != 0 {
				t.Fatalf("created %s in the working directory", ents[0].Name())
			}
		})
	}
}
