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
		Usage:   "--data DIR | --db postgres://...",
		Run:     runAuditVerify,
	})
}

func runAuditVerify(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	dataDir := fs.String("data", "", "attestd's data `DIR` (embedded store in DIR/store, signed checkpoints)")
	db := fs.String("db", "", "PostgreSQL `URL` (postgres://...) instead of the embedded store")
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
	cpNote := "no signed checkpoints (give --data to use DATA/" + attestd.CheckpointFile + ")"
	if *dataDir != "" {
		keyPath := filepath.Join(*dataDir, attestd.TokenKeyFile)
		if signer, err := attestd.LoadTokenKey(keyPath); err == nil {
			if opts.Trusted, err = attestd.ReadCheckpoints(filepath.Join(*dataDir, attestd.CheckpointFile), signer.Public()); err != nil {
				return fmt.Errorf("audit log does NOT verify: %w", err)
			}
			cpNote = fmt.Sprintf("%d signed checkpoints", len(opts.Trusted))
		} else {
			cpNote = fmt.Sprintf("no signed checkpoints (%v)", err)
		}
	}
	res, err := store.VerifyAudit(ctx, st, opts)
	if err != nil {
		return fmt.Errorf("audit log does NOT verify after %d records: %w", res.Records, err)
	}
	fmt.Fprintf(env.Stdout, "audit log OK: %d records, head %d %s; %s\n", res.Records, res.Head.Seq, hex.EncodeToString(res.Head.Hash), cpNote)
	return nil
}
