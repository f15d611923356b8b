package attestdcmd

import (
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/store/postgres"
)

// newLogger builds the slog logger for --log-format and --log-level.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	o := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, o)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want json or text", format)
	}
}

// checkListenAddr checks a listen address flag: [HOST]:PORT.
func checkListenAddr(flagName, addr string) error {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return cli.Usagef("%s %q: want [HOST]:PORT, e.g. :8443 or 127.0.0.1:8443", flagName, addr)
	}
	return nil
}

// checkDBFlag refuses a --db that is not a PostgreSQL URL as a usage
// error that does not repeat it (it may hold a password); otherwise says
// what to give instead.
func checkDBFlag(db, otherwise string) error {
	if err := postgres.CheckDSN(db); err != nil {
		return cli.Usagef("--db: want a postgres:// or postgresql:// URL, e.g. postgres://attestd@db.example/attestd (key=value connection strings are not accepted; %s)", otherwise)
	}
	return nil
}
