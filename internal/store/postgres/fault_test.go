package postgres_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/pgtest"
	"github.com/bulwark-project/bulwark/internal/store/postgres"
	"github.com/jackc/pgx/v5"
)

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
			s, err := postgres.Open(ctx, p.dsn, store.Options{})
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
