package attestdcmd

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
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
	dataDir := fs.String("data", "", "attestd's data `DIR` (embedded store)")
	db := fs.String("db", "", "PostgreSQL `DSN` instead of the embedded store")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target := *db
	if target == "" {
		if *dataDir == "" {
			return cli.Usagef("give --data DIR or --db DSN")
		}
		target = filepath.Join(*dataDir, "store")
	}
	st, err := store.Open(ctx, target, store.Options{})
	if err != nil {
		return fmt.Errorf("opening store (is attestd running on it? the embedded store allows one process): %w", err)
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
