package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/pgtest"
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

// TestEmbeddedDiskFull runs the embedded store on a small tmpfs, fills the
// file system and checks that the write that no longer fits fails with
// ErrUnavailable (and ENOSPC underneath), and that reads keep working.
func TestEmbeddedDiskFull(t *testing.T) {
	dir := smallTmpfs(t, 1<<20)
	ctx := context.Background()
	s, err := store.OpenEmbedded(ctx, filepath.Join(dir, "store"), store.Options{})
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

// TestPostgresUnreachable checks that a PostgreSQL store whose server went
// away or refuses connections answers ErrUnavailable: through a TCP proxy
// that is then shut (the network path is gone), and with the database's
// backends terminated while it accepts no new connections.
func TestPostgresUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIt func(t *testing.T, dsn string, p *pgProxy)
	}{
		{"network gone", func(t *testing.T, dsn string, p *pgProxy) { p.Close() }},
		{"backends terminated", func(t *testing.T, dsn string, p *pgProxy) {
			ctx := context.Background()
			u, err := url.Parse(dsn)
			if err != nil {
				t.Fatal(err)
			}
			db := u.Path[1:]
			u.Path = "/postgres" // a database may not lock itself out
			conn, err := pgx.Connect(ctx, u.String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{db}.Sanitize()+` ALLOW_CONNECTIONS false`); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, db); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := pgtest.DSN(t)
			p := newPGProxy(t, dsn)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			s, err := store.Open(ctx, p.dsn, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.ListNodes(ctx); err != nil {
				t.Fatal(err)
			}
			tc.breakIt(t, dsn, p)
			for _, op := range []struct {
				name string
				call func() error
			}{
				{"ListNodes", func() error { _, err := s.ListNodes(ctx); return err }},
				{"GetNode", func() error { _, err := s.GetNode(ctx, "n"); return err }},
				{"AppendAudit", func() error {
					_, err := s.AppendAudit(ctx, store.AuditEntry{Kind: store.AuditKind("admin"), Subject: "s"})
					return err
				}},
			} {
				if err := op.call(); !errors.Is(err, store.ErrUnavailable) {
					t.Errorf("%s with PostgreSQL unreachable: %v, want ErrUnavailable", op.name, err)
				}
			}
		})
	}
}

// pgProxy forwards TCP connections on a loopback port to the unix socket of
// a pgtest server; Close shuts the port and every forwarded connection.
type pgProxy struct {
	ln    net.Listener
	dsn   string // the test database through the proxy
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newPGProxy(t *testing.T, dsn string) *pgProxy {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	host, port := q.Get("host"), q.Get("port")
	if host == "" || host[0] != '/' {
		t.Skip("the PostgreSQL under test is not on a unix socket (" + pgtest.EnvDSN + " set): the proxy test needs pgtest's own server")
	}
	sock := filepath.Join(host, ".s.PGSQL."+port)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{ln: ln}
	q.Del("host")
	q.Del("port")
	u.Host = ln.Addr().String()
	u.RawQuery = q.Encode()
	p.dsn = u.String()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("unix", sock)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, b)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); io.Copy(b, c); b.Close() }()
			go func() { defer p.wg.Done(); io.Copy(c, b); c.Close() }()
		}
	}()
	t.Cleanup(p.Close)
	return p
}

// Close stops accepting and closes every forwarded connection. Idempotent.
func (p *pgProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}
