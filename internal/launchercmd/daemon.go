package launchercmd

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os/user"
	"strconv"
	"time"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/hostd"
	"github.com/bulwark-project/bulwark/internal/statedir"
	"github.com/bulwark-project/bulwark/tpm"
	"github.com/bulwark-project/bulwark/tpm/limits"
)

var daemonCommand = &cli.Command{
	Name:    "daemon",
	Summary: "serve this host's sandboxes: 'run -d', ps, logs, stop, inspect and rm talk to it over a local socket",
	Usage:   "--attestd HOST:PORT --ca CA.pem [--socket PATH] [--socket-group GROUP] [--tpm SPEC] [--pcr N] [--keep-sandboxes]",
	Run:     runDaemon,
}

func runDaemon(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	af := addAttestdFlags(fs, env)
	socket := fs.String("socket", env.Getenv("BULWARK_SOCKET"), "unix socket to serve on (env BULWARK_SOCKET; default launcher.sock in the state directory)")
	group := fs.String("socket-group", "", "a group whose members may use the socket too (default: root and this user only)")
	tpmSpec := fs.String("tpm", env.Getenv("BULWARK_TPM"), "host TPM spec (env BULWARK_TPM); default /dev/tpmrm0 or the managed swtpm")
	pcr := fs.Int("pcr", limits.DefaultLaunchPCR, fmt.Sprintf("launch PCR, %d..%d (must match attestd's --launch-pcr)", limits.MinLaunchPCR, limits.MaxPCR))
	agent := fs.String("agent", "", "guest agent binary for the default base initramfs (default: bulwark-agent beside launcher)")
	logLimit := fs.Int64("log-limit", hostd.DefaultLogLimit, "bytes of output kept per sandbox; past it output is dropped, saying so in the log")
	keep := fs.Bool("keep-sandboxes", false, "on SIGTERM/SIGINT, leave running sandboxes running for the next launcher daemon to take over (default: stop their workloads gracefully)")
	reattest := fs.Duration("reattest-interval", hostd.DefaultReattestInterval,
		"attest the running sandboxes again this often (one quote for all; whole seconds, 1s..24h; 0: off); attestd reports a sandbox stale after twice this without one")
	verbose := fs.Bool("v", false, "log details (every launch step) to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("daemon takes no arguments, got %q", fs.Args())
	}
	ao, err := af.options()
	if err != nil {
		return err
	}
	if err := checkLaunchPCR(*pcr); err != nil {
		return err
	}
	if *reattest < 0 || *reattest > 24*time.Hour || *reattest%time.Second != 0 {
		return cli.Usagef("--reattest-interval %v: want whole seconds from 1s to 24h, or 0 (off)", *reattest)
	}
	if *logLimit < 4096 {
		return cli.Usagef("--log-limit %d: want at least 4096 bytes", *logLimit)
	}
	gid := 0
	if *group != "" {
		g, err := user.LookupGroup(*group)
		if err != nil {
			return cli.Usagef("--socket-group %q: %v", *group, err)
		}
		gid, _ = strconv.Atoi(g.Gid)
		if gid == 0 {
			return cli.Usagef("--socket-group %q: the root group already has root's access; name another group", *group)
		}
	}
	state, err := statedir.Ensure(env.Getenv)
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level}))

	t, err := tpm.Open(ctx, *tpmSpec)
	if err != nil {
		return fmt.Errorf("host TPM: %w", err)
	}
	defer t.Close()
	if w := t.AccessWarning(); w != "" {
		logger.Warn(w)
	}
	if _, err := t.LoadAK(ctx); err != nil {
		return fmt.Errorf("host TPM has no attestation key yet: run 'launcher enroll' first (%w)", err)
	}
	svc, err := hostd.New(hostd.Config{
		StateDir: state, Attestd: ao, TPM: t, PCR: *pcr, Agent: *agent, LogLimit: *logLimit, Logger: logger,
		ReattestInterval: *reattest,
	})
	if err != nil {
		return err
	}
	return hostd.Serve(ctx, svc, hostd.ServeOptions{Socket: *socket, Group: gid, KeepSandboxes: *keep}, func(path string) {
		logger.Info("launcher daemon serving", "socket", path, "state", state, "attestd", ao.Addr)
	})
}
