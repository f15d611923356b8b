package launchercmd

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"strconv"

	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/internal/cli"
)

// attestdFlags are the flags every command that talks to attestd shares.
type attestdFlags struct {
	addr, ca, serverName *string
	insecure             *bool
	envAddr              string // BULWARK_ATTESTD, the default of --attestd
}

func addAttestdFlags(fs *flag.FlagSet, env *cli.Env) attestdFlags {
	return attestdFlags{
		envAddr:    env.Getenv("BULWARK_ATTESTD"),
		addr:       fs.String("attestd", env.Getenv("BULWARK_ATTESTD"), "attestd address HOST:PORT (env BULWARK_ATTESTD)"),
		ca:         fs.String("ca", env.Getenv("BULWARK_CA"), "attestd's CA certificate, DATA/tls/ca.crt of its data directory, or the ca.crt written beside an admin certificate (env BULWARK_CA)"),
		serverName: fs.String("server-name", "", "TLS server name to expect (default: the host of --attestd)"),
		insecure:   fs.Bool("insecure", false, "plaintext gRPC, only for an attestd started with --insecure (never in production)"),
	}
}

func (f attestdFlags) options() (attestclient.Options, error) {
	if *f.addr == "" {
		return attestclient.Options{}, cli.Usagef("--attestd HOST:PORT is required (or set BULWARK_ATTESTD)")
	}
	if err := checkHostPort(*f.addr); err != nil {
		from := ""
		if *f.addr == f.envAddr {
			from = " (from BULWARK_ATTESTD)"
		}
		return attestclient.Options{}, cli.Usagef("--attestd %q%s: %v", *f.addr, from, err)
	}
	if *f.ca == "" && !*f.insecure {
		return attestclient.Options{}, cli.Usagef("--ca FILE is required: attestd's CA certificate (DATA/tls/ca.crt in its data directory), or set BULWARK_CA")
	}
	return attestclient.Options{Addr: *f.addr, CAFile: *f.ca, ServerName: *f.serverName, Insecure: *f.insecure}, nil
}

// checkHostPort makes sure addr is HOST:PORT with a host and a port number
// (IPv6 in brackets): anything else would only fail when dialled, as a
// name resolver error.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want HOST:PORT, e.g. localhost:8443 (%v)", err)
	}
	if host == "" {
		return errors.New("no host: want HOST:PORT, e.g. localhost:8443")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q: want a number 1..65535, e.g. localhost:8443", port)
	}
	return nil
}
