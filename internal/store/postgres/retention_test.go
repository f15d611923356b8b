package postgres_test

import (
	"context"
	"testing"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/pgtest"
	"github.com/bulwark-project/bulwark/internal/store/postgres"
	"github.com/bulwark-project/bulwark/internal/store/storetest"
	"github.com/jackc/pgx/v5"
)

func TestPostgresAuditTamperAfterPurge(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sql     string
		wantPos uint64
	}{
		{"drop the first kept record", `DELETE FROM audit WHERE seq = 5`, 5},
		{"drop two kept records", `DELETE FROM audit WHERE seq IN (5, 6)`, 5},
		{"drop a kept record mid-log", `DELETE FROM audit WHERE seq = 8`, 8},
		{"edit a kept record", `UPDATE audit SET subject = 'other' WHERE seq = 9`, 9},
		{"remove the seal", `UPDATE audit_seal SET seq = 0`, 1},
		{"move the seal forward, records dropped", `UPDATE audit_seal SET seq = 6, hash = (SELECT hash FROM audit WHERE seq = 6); DELETE FROM audit WHERE seq IN (5, 6)`, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dsn := pgtest.DSN(t)
			s, err := postgres.Open(ctx, dsn, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			opts := storetest.PurgedChain(t, s)
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, tc.sql); err != nil {
				t.Fatal(err)
			}
			storetest.WantChainError(t, s, *opts, tc.wantPos)
		})
	}
}
