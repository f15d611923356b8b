package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/bulwark-project/bulwark/internal/store"
)

func TestUnavailableClassifies(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		fault bool
	}{
		{"nil", nil, false},
		{"disk full", fmt.Errorf("store: writing: %w", &os.PathError{Op: "write", Path: "/data/store.db", Err: syscall.ENOSPC}), true},
		{"quota", syscall.EDQUOT, true},
		{"I/O error", fmt.Errorf("commit: %w", syscall.EIO), true},
		{"read-only file system", syscall.EROFS, true},
		{"bbolt closed", berrors.ErrDatabaseNotOpen, true},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"connection closed mid-call", fmt.Errorf("store: reading node: %w", io.ErrUnexpectedEOF), true},
		{"pg disk full", &pgconn.PgError{Code: "53100"}, true},
		{"pg too many connections", &pgconn.PgError{Code: "53300"}, true},
		{"pg io error", &pgconn.PgError{Code: "58030"}, true},
		{"pg admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"pg connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"pg unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"pg query canceled", &pgconn.PgError{Code: "57014"}, false},
		{"no rows", pgx.ErrNoRows, false},
		{"not found", fmt.Errorf("node x: %w", store.ErrNotFound), false},
		{"conflict", store.ErrConflict, false},
		{"canceled", fmt.Errorf("x: %w", context.Canceled), false},
		{"deadline", &net.OpError{Op: "read", Err: context.DeadlineExceeded}, false},
		{"other", errors.New("json: cannot unmarshal"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := store.Unavailable(tc.err)
			if is := errors.Is(got, store.ErrUnavailable); is != tc.fault {
				t.Fatalf("Unavailable(%v): Is ErrUnavailable = %v, want %v", tc.err, is, tc.fault)
			}
			if tc.err == nil {
				if got != nil {
					t.Fatalf("Unavailable(nil) = %v", got)
				}
				return
			}
			if got.Error() != tc.err.Error() || !errors.Is(got, tc.err) {
				t.Fatalf("Unavailable(%v) = %v: message or chain changed", tc.err, got)
			}
		})
	}
}
