package launchercmd

import (
	"flag"

	"github.com/bulwark-project/bulwark/internal/attestclient"
	"github.com/bulwark-project/bulwark/internal/cli"
)

// attestdFlags are the flags every command that talks to attestd shares.
type attestdFlags struct {
	addr, ca, serverName *string
	insecure             *bool
}

func addAttestdFlags(fs *flag.FlagSet, env *cli.Env) attestdFlags {
	return attestdFlags{
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
	if *f.ca == "" && !*f.insecure {
		return attestclient.Options{}, cli.Usagef("--ca FILE is required: attestd's CA certificate (DATA/tls/ca.crt in its data directory), or set BULWARK_CA")
	}
	return attestclient.Options{Addr: *f.addr, CAFile: *f.ca, ServerName: *f.serverName, Insecure: *f.insecure}, nil
}
