package attestdcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	iofs "io/fs"
	"path/filepath"

	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
)

var storeCompactCommand = &cli.Command{
	Name:    "store compact",
	Summary: "shrink the embedded store's file to the pages in use (attestd stopped)",
	Usage:   "--data DIR",
	Run:     runStoreCompact,
}

func runStoreCompact(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	dataDir := fs.String("data", "", "attestd's data `DIR` (the embedded store is DIR/store); stop attestd first")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q (give the data directory with --data)", fs.Arg(0))
	}
	if *dataDir == "" {
		return cli.Usagef("give --data DIR (PostgreSQL reclaims space with its own VACUUM)")
	}
	dir := filepath.Join(*dataDir, "store")
	res, err := embedded.Compact(dir)
	switch {
	case errors.Is(err, embedded.ErrStoreInUse):
		return fmt.Errorf("not compacted: attestd (or another process) is using the store in %s: stop it, then run 'attestd store compact' again", dir)
	case errors.Is(err, iofs.ErrNotExist):
		return fmt.Errorf("no attestd store at %s: is --data right?", filepath.Join(dir, embedded.File))
	case err != nil:
		return err
	}
	fmt.Fprintf(env.Stdout, "compacted %s: %s -> %s\n", filepath.Join(dir, embedded.File), mib(res.Before), mib(res.After))
	return nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB (%d bytes)", float64(n)/(1<<20), n) }
