package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/pgtest"
	"github.com/bulwark-project/bulwark/internal/store/postgres"
	"github.com/bulwark-project/bulwark/internal/store/storetest"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func openPostgres(t *testing.T) store.Store {
	s, err := postgres.Open(context.Background(), pgtest.DSN(t), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPostgresConformance(t *testing.T) {
	storetest.Run(t, openPostgres)
}

// TestPostgresReplicas runs two stores (two "replicas") on one database and
// races them on the same nonces and on audit appends.
func TestPostgresReplicas(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	var reps []store.Store
	for range 3 {
		s, err := postgres.Open(ctx, dsn, store.Options{}) // concurrent migration is serialised
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		reps = append(reps, s)
	}
	storetest.Replicas(t, reps)
}

func TestPostgresAuditTamper(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sql     string
		wantPos uint64
	}{
		{"edit subject", `UPDATE audit SET subject = 'other' WHERE seq = 4`, 4},
		{"edit details", `UPDATE audit SET details = '{"i":99}'::bytea WHERE seq = 2`, 2},
		{"edit time", `UPDATE audit SET time = time + 1000 WHERE seq = 7`, 7},
		{"drop middle", `DELETE FROM audit WHERE seq = 5`, 5},
		{"drop first", `DELETE FROM audit WHERE seq = 1`, 1},
		{"drop last", `DELETE FROM audit WHERE seq = 8`, 8},
		{"swap two", `UPDATE audit SET seq = -seq WHERE seq IN (3, 6); UPDATE audit SET seq = CASE seq WHEN -3 THEN 6 ELSE 3 END WHERE seq IN (-3, -6)`, 3},
		{"renumber after drop", `DELETE FROM audit WHERE seq = 5; UPDATE audit SET seq = seq - 1 WHERE seq > 5`, 5},
		{"rehash edited record", `UPDATE audit SET subject = 'x', hash = sha256(hash) WHERE seq = 6`, 6},
		// A walk up to the head's seq checked nothing past it.
		{"head set to the empty log", `UPDATE audit_head SET seq = 0`, 1},
		{"head set back", `UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit WHERE seq = 3)`, 4},
		{"record added behind the head", `INSERT INTO audit SELECT 9, time, kind, node, subject, details, hash, hash FROM audit WHERE seq = 8`, 9},
		{"every seq negated, head emptied", `UPDATE audit SET seq = -seq; UPDATE audit_head SET seq = 0`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dsn := pgtest.DSN(t)
			s, err := postgres.Open(ctx, dsn, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for i := range 8 {
				if _, err := s.AppendAudit(ctx, store.AuditEntry{Kind: store.KindAdmin, Subject: fmt.Sprint(i), Details: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := store.VerifyAudit(ctx, s, store.VerifyOptions{}); err != nil {
				t.Fatalf("untouched chain: %v", err)
			}
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, tc.sql); err != nil {
				t.Fatal(err)
			}
			_, err = store.VerifyAudit(ctx, s, store.VerifyOptions{})
			var ce *store.ChainError
			if !errors.As(err, &ce) || !errors.Is(err, store.ErrAuditChain) {
				t.Fatalf("tampered chain verified: %v", err)
			}
			if ce.Position != tc.wantPos {
				t.Fatalf("first bad record reported at %d, want %d (%v)", ce.Position, tc.wantPos, err)
			}
		})
	}
}

// TestPostgresSchemaVersion: a database written by a newer attestd is
// refused with a clear error, and reopening a current one is a no-op.
func TestPostgresSchemaVersion(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	s, err := postgres.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendAudit(ctx, store.AuditEntry{Kind: store.KindAdmin}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = postgres.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if h, err := s.AuditHead(ctx); err != nil || h.Seq != 1 {
		t.Fatalf("after reopen: head %d, %v", h.Seq, err)
	}
	s.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE bulwark_schema SET version = 99`); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.Open(ctx, dsn, store.Options{}); err == nil || !strings.Contains(err.Error(), "upgrade attestd") {
		t.Fatalf("newer schema: %v", err)
	}
	if _, err := postgres.Open(ctx, "postgres://bad dsn%zz", store.Options{}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad DSN: %v", err)
	}
}

// TestPostgresMigrate3: a version-3 database (before replicas shared the
// vault's check value and join requests) gains both tables on open, its
// data kept.
func TestPostgresMigrate3(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	s, err := postgres.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendAudit(ctx, store.AuditEntry{Kind: store.KindAdmin}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{`DROP TABLE vault_check`, `DROP TABLE replica_joins`, `UPDATE bulwark_schema SET version = 3`} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s, err = postgres.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatalf("open version 3: %v", err)
	}
	defer s.Close()
	if h, err := s.AuditHead(ctx); err != nil || h.Seq != 1 {
		t.Fatalf("after migration: head %d, %v", h.Seq, err)
	}
	if err := s.PutVaultCheck(ctx, []byte("check")); err != nil {
		t.Fatalf("vault check after migration: %v", err)
	}
	if err := s.CreateJoin(ctx, store.Join{ID: "j", Node: "n", PublicKey: []byte{1}}); err != nil {
		t.Fatalf("join after migration: %v", err)
	}
	var v int
	if err := conn.QueryRow(ctx, `SELECT version FROM bulwark_schema`).Scan(&v); err != nil || v != 8 {
		t.Fatalf("schema version after open = %d, %v; want 8", v, err)
	}
}

// TestPostgresMigrate4: a version-4 database (before attestd kept each
// node's verified launch log prefix) gains the prefix tables on open, its
// data kept.
func TestPostgresMigrate4(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	s, err := postgres.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := storetest.NewNode(t)
	if err := s.CreateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	s.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{`DROP TABLE launch_prefix`, `DROP TABLE launch_records`, `UPDATE bulwark_schema SET version = 4`} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s, err = postgres.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatalf("open version 4: %v", err)
	}
	defer s.Close()
	if _, err := s.GetNode(ctx, n.ID); err != nil {
		t.Fatalf("node after migration: %v", err)
	}
	pcr := bytes.Repeat([]byte{1}, 32)
	rec := store.PrefixRecord{RecNum: 0, SandboxID: "sb", Digest: bytes.Repeat([]byte{2}, 32), PCR: pcr}
	if _, err := s.AdvanceLaunchPrefix(ctx, store.LaunchPrefix{NodeID: n.ID, Events: 1, PCR: pcr}, []store.PrefixRecord{rec}); err != nil {
		t.Fatalf("launch prefix after migration: %v", err)
	}
	var v int
	if err := conn.QueryRow(ctx, `SELECT version FROM bulwark_schema`).Scan(&v); err != nil || v != 8 {
		t.Fatalf("schema version after open = %d, %v; want 8", v, err)
	}
}

// TestPostgresMigrate6: a version-6 database (before END records) gains
// the launch records' ended column on open; its records read back as
// launch events, and an END record stored after reads back as one.
func TestPostgresMigrate6(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	s, err := postgres.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := storetest.NewNode(t)
	if err := s.CreateNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	pcr0, pcr1 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{3}, 32)
	launch := store.PrefixRecord{RecNum: 0, SandboxID: "sb", Digest: bytes.Repeat([]byte{2}, 32), PCR: pcr0}
	if _, err := s.AdvanceLaunchPrefix(ctx, store.LaunchPrefix{NodeID: n.ID, Events: 1, PCR: pcr0}, []store.PrefixRecord{launch}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{`ALTER TABLE launch_records DROP COLUMN ended`, `UPDATE bulwark_schema SET version = 6`} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s, err = postgres.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatalf("open version 6: %v", err)
	}
	defer s.Close()
	var v int
	if err := conn.QueryRow(ctx, `SELECT version FROM bulwark_schema`).Scan(&v); err != nil || v != 8 {
		t.Fatalf("schema version after open = %d, %v; want 8", v, err)
	}
	pv, err := s.ReadLaunchPrefix(ctx, n.ID, 1, "sb")
	if err != nil {
		t.Fatal(err)
	}
	if len(pv.Sandbox) != 1 || pv.Sandbox[0].End {
		t.Fatalf("migrated records of sb: %+v", pv.Sandbox)
	}
	end := store.PrefixRecord{RecNum: 1, SandboxID: "sb", Digest: bytes.Repeat([]byte{4}, 32), PCR: pcr1, End: true}
	if _, err := s.AdvanceLaunchPrefix(ctx, store.LaunchPrefix{NodeID: n.ID, Events: 2, PCR: pcr1}, []store.PrefixRecord{launch, end}); err != nil {
		t.Fatal(err)
	}
	if pv, err = s.ReadLaunchPrefix(ctx, n.ID, 2, "sb"); err != nil {
		t.Fatal(err)
	}
	if len(pv.Sandbox) != 2 || pv.Sandbox[0].End || !pv.Sandbox[1].End {
		t.Fatalf("records of sb after its END: %+v", pv.Sandbox)
	}
}
