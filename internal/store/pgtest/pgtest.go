// Package pgtest gives tests a real, throwaway PostgreSQL: one server per
// test binary (initdb into a temporary directory, listening only on a unix
// socket there, run as the unprivileged "postgres" user when the tests run
// as root) and a fresh, empty database per DSN call. Set
// BULWARK_TEST_PG_DSN to use an existing server instead (its role needs
// CREATEDB).
//
// Use it as
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//	...
//	dsn := pgtest.DSN(t) // skips the test when PostgreSQL is not installed
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the environment variable that points the tests at an
// existing PostgreSQL server.
const EnvDSN = "BULWARK_TEST_PG_DSN"

// port only names the unix socket; the server listens on no TCP address.
const port = 5432

var (
	once     sync.Once
	srv      *server
	startErr error
	skipMsg  string
)

type server struct {
	dir  string
	cmd  *exec.Cmd
	exit chan error
	dsn  string // of the "postgres" maintenance database
}

// Main runs the tests, then stops the server if one was started, and exits.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop shuts the shared server down and removes its directory. Main calls it.
func Stop() {
	if srv == nil {
		return
	}
	_ = srv.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
	select {
	case <-srv.exit:
	case <-time.After(20 * time.Second):
		_ = srv.cmd.Process.Kill()
		<-srv.exit
	}
	os.RemoveAll(srv.dir)
	srv = nil
}

// findBin returns the directory of PostgreSQL's server binaries.
func findBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) > 0 {
		return filepath.Dir(m[len(m)-1]), nil
	}
	return "", errors.New("PostgreSQL server binaries (initdb, postgres) not found: apt-get install postgresql")
}

// DSN returns the DSN of a new, empty database for this test. Without
// BULWARK_TEST_PG_DSN it skips the test when PostgreSQL is not installed or
// under -short (no external processes), and fails it if a server cannot be
// started.
func DSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvDSN)
	if base == "" && testing.Short() {
		t.Skip("-short: skipping a test that starts a PostgreSQL server (set " + EnvDSN + " to use one you run)")
	}
	if base == "" {
		once.Do(func() { srv, startErr = start() })
		if skipMsg != "" {
			t.Skip(skipMsg)
		}
		if startErr != nil {
			t.Fatalf("pgtest: starting PostgreSQL: %v", startErr)
		}
		base = srv.dsn
	}
	name := "bulwark_test_" + randHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgtest: connecting to %s: %v", redact(base), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: creating database: %v", err)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: %s is not a URL DSN: %v", EnvDSN, err)
	}
	u.Path = "/" + name
	if os.Getenv(EnvDSN) != "" {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if c, err := pgx.Connect(ctx, base); err == nil {
				_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
				c.Close(ctx)
			}
		})
	}
	return u.String()
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return u.Redacted()
}

// start runs initdb and postgres in a new temporary directory.
func start() (*server, error) {
	bin, err := findBin()
	if err != nil {
		skipMsg = err.Error()
		return nil, err
	}
	parent := ""
	if os.Geteuid() == 0 {
		// The server runs as "postgres", which must traverse every parent:
		// a private $TMPDIR would not do, /tmp does.
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, "bulwark-pg-")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root: use the package's system user.
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root and no 'postgres' user to run the server as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Env = []string{"LC_ALL=C.UTF-8", "PATH=/usr/bin:/bin"}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, tail(out))
	}
	logPath := filepath.Join(dir, "postgres.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// Run postgres itself (not pg_ctl) as our child: Pdeathsig stops it if
	// the test binary dies without calling Stop.
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", dir, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=", "-c", "max_connections=200", "-c", "shared_buffers=32MB",
		"-c", "logging_collector=off")
	runtime.LockOSThread() // Pdeathsig follows the thread that forks.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = []string{"LC_ALL=C.UTF-8", "PATH=/usr/bin:/bin"}
	cmd.Dir = dir
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("starting postgres: %w", err)
	}
	s := &server{dir: dir, cmd: cmd, exit: make(chan error, 1)}
	go func() { s.exit <- cmd.Wait() }()
	s.dsn = fmt.Sprintf("postgres://postgres@/postgres?host=%s&port=%d&sslmode=disable", url.QueryEscape(dir), port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, s.dsn)
		if err == nil {
			conn.Close(ctx)
			cancel()
			break
		}
		cancel()
		select {
		case werr := <-s.exit:
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres exited (%v): %s", werr, tail(b))
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-s.exit
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres not ready after 60s: %v: %s", err, tail(b))
		}
		time.Sleep(100 * time.Millisecond)
	}
	ok = true
	return s, nil
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
