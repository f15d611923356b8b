package attestdcmd

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"

	"github.com/bulwark-project/bulwark/internal/attestd"
	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/embedded"
	"github.com/bulwark-project/bulwark/internal/store/postgres"
	"github.com/bulwark-project/bulwark/token"
)

var auditVerifyCommand = &cli.Command{
	Name:    "audit verify",
	Summary: "verify the audit log's hash chain offline (embedded store or PostgreSQL)",
	Usage:   "--data DIR [--db postgres://...] [--checkpoints FILE] [--since SEQ:HASH] [--allow-no-checkpoint]",
	Run:     runAuditVerify,
}

func runAuditVerify(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	dataDir := fs.String("data", "", "attestd's data `DIR` (embedded store in DIR/store, signed checkpoints)")
	db := fs.String("db", "", "PostgreSQL `URL` (postgres://...) instead of the embedded store")
	cpFile := fs.String("checkpoints", "", "signed checkpoint `FILE` (default DATA/"+attestd.CheckpointFile+"); give a copy kept off the host")
	noCP := fs.Bool("allow-no-checkpoint", false, "verify the chain alone when there is no signed checkpoint (its start cannot then be vouched for)")
	sinceFlag := fs.String("since", "", "verify only the records from signed `CHECKPOINT` on (SEQ:HASH, as the last run printed it): one of the signed checkpoints, or the retention seal")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var since *store.Checkpoint
	if *sinceFlag != "" {
		c, err := store.ParseCheckpoint(*sinceFlag)
		if err != nil {
			return cli.Usagef("--since: %v", err)
		}
		if *dataDir == "" {
			return cli.Usagef("--since needs --data DIR (the checkpoint must be one attestd signed with DATA/%s)", token.KeyFile)
		}
		since = &c
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
		return cli.Usagef("--checkpoints needs --data DIR (the token key that signed them is DATA/%s)", token.KeyFile)
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
		if st, err = postgres.Open(ctx, *db, store.Options{}); err != nil {
			return fmt.Errorf("opening the PostgreSQL store (--db): %w", err)
		}
	} else {
		dir := filepath.Join(*dataDir, "store")
		st, err = embedded.OpenExisting(ctx, dir, store.Options{})
		if errors.Is(err, iofs.ErrNotExist) {
			return fmt.Errorf("no attestd store at %s: is --data right?", filepath.Join(dir, embedded.File))
		}
		if err != nil {
			return fmt.Errorf("opening store (is attestd running on it? the embedded store allows one process): %w", err)
		}
	}
	defer st.Close()
	var opts store.VerifyOptions
	var noCheckpoint string // why there is no checkpoint to trust
	cpPath := ""
	if *dataDir == "" {
		noCheckpoint = "no signed checkpoints: give --data DIR (attestd's token key and " + attestd.CheckpointFile + ")"
	} else {
		cpPath = *cpFile
		if cpPath == "" {
			cpPath = filepath.Join(*dataDir, attestd.CheckpointFile)
		}
		keyPath := filepath.Join(*dataDir, token.KeyFile)
		signer, err := token.LoadKey(keyPath)
		if err != nil {
			if since != nil {
				return fmt.Errorf("--since %s: cannot check that attestd signed it: %w", *sinceFlag, err)
			}
			noCheckpoint = fmt.Sprintf("no signed checkpoints (%v)", err)
		} else {
			// The seal of records purged by retention is checked with the
			// same key.
			opts.SealKey = signer.Public()
			if opts.Trusted, err = attestd.ReadCheckpoints(cpPath, signer.Public()); err != nil {
				return fmt.Errorf("audit log does NOT verify: %w", err)
			}
			if len(opts.Trusted) == 0 {
				noCheckpoint = fmt.Sprintf("no signed checkpoints in %s (attestd writes one at every start: missing or emptied)", cpPath)
			}
		}
	}
	if since != nil {
		if err := checkSince(ctx, st, *since, opts); err != nil {
			return err
		}
		opts.Since = since
		noCheckpoint = ""
	}
	if noCheckpoint != "" && !*noCP {
		return fmt.Errorf("audit log NOT verified: %s: the chain's start cannot be vouched for; pass --allow-no-checkpoint to verify the chain alone", noCheckpoint)
	}
	if noCheckpoint != "" {
		opts.AllowUnsealedStart = true // the chain alone, as asked
	}
	res, err := store.VerifyAudit(ctx, st, opts)
	if errors.Is(err, store.ErrCheckpointPurged) {
		return fmt.Errorf("--since %s: %w", *sinceFlag, err)
	}
	if err != nil {
		return fmt.Errorf("audit log does NOT verify after %d records: %w", res.Records, err)
	}
	var last store.Checkpoint
	for _, c := range opts.Trusted {
		if c.Seq >= last.Seq {
			last = c
		}
	}
	cpNote := noCheckpoint + " (--allow-no-checkpoint)"
	if noCheckpoint == "" {
		cpNote = fmt.Sprintf("%d signed checkpoints, the last %s", len(opts.Trusted), last)
	}
	if since != nil {
		cpNote = fmt.Sprintf("from checkpoint %s; %s", since, cpNote)
	}
	switch {
	case res.Seal.Seq > 0:
		cpNote += fmt.Sprintf("; records up to %d purged by retention under the seal %s", res.Seal.Seq, res.Seal)
	case res.Unsealed:
		cpNote += fmt.Sprintf("; records before %d are missing, with no verified seal (not vouched for)", res.First)
	}
	if res.First == 0 {
		res.First = res.Head.Seq
	}
	fmt.Fprintf(env.Stdout, "audit log OK: %d records (%d..%d), head %s; %s\n", res.Records, res.First, res.Head.Seq, res.Head, cpNote)
	if last.Seq > 0 && last.Seq >= res.Seal.Seq {
		fmt.Fprintf(env.Stdout, "next time, verify only what came after: attestd audit verify --since %s\n", last)
	}
	return nil
}

// checkSince refuses a --since checkpoint attestd did not sign: it must be
// one of the signed checkpoints (opts.Trusted) or the store's seal, with
// the same hash.
func checkSince(ctx context.Context, st store.Store, since store.Checkpoint, opts store.VerifyOptions) error {
	for _, c := range opts.Trusted {
		if c.Seq != since.Seq {
			continue
		}
		if !bytes.Equal(c.Hash, since.Hash) {
			return fmt.Errorf("--since %s does not match the signed checkpoint of record %d (%s): audit log NOT verified", since, c.Seq, c)
		}
		return nil
	}
	seal, err := st.AuditSeal(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return fmt.Errorf("reading the audit seal: %w", err)
	case seal.Seq == since.Seq:
		if err := store.VerifySeal(opts.SealKey, seal); err != nil {
			return fmt.Errorf("--since %s: the store's seal at %d does not verify (%v): audit log NOT verified", since, seal.Seq, err)
		}
		if !bytes.Equal(seal.Hash, since.Hash) {
			return fmt.Errorf("--since %s does not match the retention seal of record %d (%s): audit log NOT verified", since, seal.Seq, seal.Checkpoint)
		}
		return nil
	}
	return fmt.Errorf("--since %s: unknown checkpoint: record %d is neither among the %d signed checkpoints nor the retention seal (checkpoints before the seal are dropped with the records they named): give one that 'attestd audit verify' printed", since, since.Seq, len(opts.Trusted))
}
