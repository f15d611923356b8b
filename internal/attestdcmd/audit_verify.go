package attestdcmd

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"

	"github.com/bulwark-project/bulwark/internal/attestd"
	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/store"
)

func init() {
	Program.Register(&cli.Command{
		Name:    "audit verify",
		Summary: "verify the audit log's hash chain offline (embedded store or PostgreSQL)",
		Usage:   "--data DIR [--db postgres://...] [--checkpoints FILE] [--allow-no-checkpoint]",
		Run:     runAuditVerify,
	})
}

func runAuditVerify(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	dataDir := fs.String("data", "", "attestd's data `DIR` (embedded store in DIR/store, signed checkpoints)")
	db := fs.String("db", "", "PostgreSQL `URL` (postgres://...) instead of the embedded store")
	cpFile := fs.String("checkpoints", "", "signed checkpoint `FILE` (default DATA/"+attestd.CheckpointFile+"); give a copy kept off the host")
	noCP := fs.Bool("allow-no-checkpoint", false, "verify the chain alone when there is no signed checkpoint (its start cannot then be vouched for)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q (give the data directory with --data)", fs.Arg(0))
	}
	if *db == "" && *dataDir == "" {
		return cli.Usagef("give --data DIR or --db postgres://...")
	}
	if *db != "" {
		if err := checkDBFlag(*db, "for the embedded store give --data DIR"); err != nil {
			return err
		}
	}
	if *cpFile != "" && *dataDir == "" {
		return cli.Usagef("--checkpoints needs --data DIR (the token key that signed them is DATA/%s)", attestd.TokenKeyFile)
	}
	if *db != "" && *dataDir != "" {
		// --data names where the signed checkpoints are: a mistyped one
		// must not pass as "no checkpoints".
		if fi, err := os.Stat(*dataDir); err != nil || !fi.IsDir() {
			return fmt.Errorf("--data %s is not an attestd data directory (no such directory): is --data right?", *dataDir)
		}
	}
	var st store.Store
	var err error
	if *db != "" {
		if st, err = store.OpenDSN(ctx, *db, store.Options{}); err != nil {
			return fmt.Errorf("opening the PostgreSQL store (--db): %w", err)
		}
	} else {
		dir := filepath.Join(*dataDir, "store")
		st, err = store.OpenEmbeddedExisting(ctx, dir, store.Options{})
		if errors.Is(err, iofs.ErrNotExist) {
			return fmt.Errorf("no attestd store at %s: is --data right?", filepath.Join(dir, store.EmbeddedFile))
		}
		if err != nil {
			return fmt.Errorf("opening store (is attestd running on it? the embedded store allows one process): %w", err)
		}
	}
	defer st.Close()
	var opts store.VerifyOptions
	var noCheckpoint string // why there is no checkpoint to trust
	if *dataDir == "" {
		noCheckpoint = "no signed checkpoints: give --data DIR (attestd's token key and " + attestd.CheckpointFile + ")"
	} else {
		path := *cpFile
		if path == "" {
			path = filepath.Join(*dataDir, attestd.CheckpointFile)
		}
		keyPath := filepath.Join(*dataDir, attestd.TokenKeyFile)
		signer, err := attestd.LoadTokenKey(keyPath)
		if err != nil {
			noCheckpoint = fmt.Sprintf("no signed checkpoints (%v)", err)
		} else {
			if opts.Trusted, err = attestd.ReadCheckpoints(path, signer.Public()); err != nil {
				return fmt.Errorf("audit log does NOT verify: %w", err)
			}
			if len(opts.Trusted) == 0 {
				noCheckpoint = fmt.Sprintf("no signed checkpoints in %s (attestd writes one at every start: missing or emptied)", path)
			}
		}
	}
	if noCheckpoint != "" && !*noCP {
		return fmt.Errorf("audit log NOT verified: %s: the chain's start cannot be vouched for; pass --allow-no-checkpoint to verify the chain alone", noCheckpoint)
	}
	res, err := store.VerifyAudit(ctx, st, opts)
	if err != nil {
		return fmt.Errorf("audit log does NOT verify after %d records: %w", res.Records, err)
	}
	cpNote := noCheckpoint + " (--allow-no-checkpoint)"
	if noCheckpoint == "" {
		var last uint64
		for _, c := range opts.Trusted {
			last = max(last, c.Seq)
		}
		cpNote = fmt.Sprintf("%d signed checkpoints, the last at record %d", len(opts.Trusted), last)
	}
	fmt.Fprintf(env.Stdout, "audit log OK: %d records, head %d %s; %s\n", res.Records, res.Head.Seq, hex.EncodeToString(res.Head.Hash), cpNote)
	return nil
}
