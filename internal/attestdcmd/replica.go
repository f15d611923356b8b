package attestdcmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/bulwark-project/bulwark/enclave"
	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/internal/store"
	"github.com/bulwark-project/bulwark/internal/store/postgres"
)

var replicaJoinCommand = &cli.Command{
	Name:    "replica join",
	Summary: "ask for the vault master key of the replicas sharing a PostgreSQL store (run again to finish once approved)",
	Usage:   "--data DIR --db postgres://... [--vault tpm|file] [--tpm SPEC] [--node NAME]",
	Run:     runReplicaJoin,
}

var replicaApproveCommand = &cli.Command{
	Name:    "replica approve",
	Summary: "approve a replica join request offline, with this replica's vault (attestd ctl replica approve does it online)",
	Usage:   "--data DIR --db postgres://... [--vault tpm|file] [--tpm SPEC] [--by NAME] ID",
	Run:     runReplicaApprove,
}

// embeddedNoJoin is the refusal of a join without a shared store.
const embeddedNoJoin = "replica join is for attestd replicas that share a PostgreSQL store (--db postgres://...); the embedded store (DATA/store) serves one attestd only, which needs no join"

// vaultFlags are the flags that name this replica's vault backend.
type vaultFlags struct {
	data, db, vault, tpm *string
	allowFile            *bool
}

func addVaultFlags(fs *flag.FlagSet) vaultFlags {
	return vaultFlags{
		data:      fs.String("data", "", "this replica's data `DIR` (its vault files are in DIR/vault); required"),
		db:        fs.String("db", "", "the replicas' PostgreSQL `URL` (postgres://...); required"),
		vault:     fs.String("vault", "tpm", "this replica's vault backend: tpm or file (development only)"),
		tpm:       fs.String("tpm", "", "TPM `SPEC` for the tpm vault backend (see docs/tpm.md)"),
		allowFile: fs.Bool("allow-insecure-file-vault", false, "allow --vault=file (development only)"),
	}
}

// check validates the flags (usage errors) before anything is opened.
func (f vaultFlags) check() error {
	if *f.data == "" {
		return cli.Usagef("--data DIR is required (this replica's data directory)")
	}
	if *f.db == "" {
		return cli.Usagef("%s", embeddedNoJoin)
	}
	if err := checkDBFlag(*f.db, "replicas share a PostgreSQL store"); err != nil {
		return err
	}
	if *f.vault == "sgx" {
		return cli.Usagef("--vault sgx: the sgx backend cannot take part in a replica join yet (tpm or file)")
	}
	return checkVaultFlags(*f.vault, *f.allowFile)
}

// open opens the store and the vault backend; close both when done.
func (f vaultFlags) open(ctx context.Context, log *slog.Logger) (store.Store, enclave.Joiner, func(), error) {
	st, err := postgres.Open(ctx, *f.db, store.Options{})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("opening the PostgreSQL store (--db): %w", err)
	}
	b, closeB, err := openVaultBackend(ctx, *f.vault, *f.data, *f.tpm, log)
	if err != nil {
		st.Close()
		return nil, nil, nil, err
	}
	j, ok := b.(enclave.Joiner)
	if !ok {
		closeB()
		st.Close()
		return nil, nil, nil, fmt.Errorf("the %s vault backend cannot take part in a replica join", b.Name())
	}
	return st, j, func() { closeB(); st.Close() }, nil
}

func runReplicaJoin(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	vf := addVaultFlags(fs)
	host, _ := os.Hostname()
	node := fs.String("node", host, "this replica's `NAME`, shown to the admin who approves it (default: the host name)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if err := vf.check(); err != nil {
		return err
	}
	if !enclave.ValidNodeName(*node) {
		return cli.Usagef("--node %q: want 1-64 of [A-Za-z0-9._-] starting with a letter or digit", *node)
	}
	log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, b, done, err := vf.open(ctx, log)
	if err != nil {
		return err
	}
	defer done()

	j, err := enclave.FinishJoin(ctx, b, st)
	switch {
	case err == nil:
		auditReplica(ctx, st, j.ID, map[string]any{"action": "replica.joined", "join": j.ID, "node": j.Node, "by": "attestd replica join"})
		fmt.Fprintf(env.Stdout, "joined: replica %s received the vault master key (join %s, approved by %s); the %s backend protects it now.\nStart it: attestd serve --data %s --db ... --vault %s\n",
			j.Node, j.ID, j.ApprovedBy, b.Name(), *vf.data, b.Name())
		return nil
	case errors.Is(err, enclave.ErrMasterKeyExists):
		return alreadyKeyed(ctx, env, b, st, *vf.data)
	case errors.Is(err, enclave.ErrJoinPending):
		printPending(env, j)
		return nil
	case errors.Is(err, enclave.ErrNoJoin):
		// No join yet (or it was denied): publish a request.
	default:
		return fmt.Errorf("finishing the join: %w", err)
	}
	j, err = enclave.StartJoin(ctx, b, st, *node)
	if errors.Is(err, enclave.ErrNothingToJoin) {
		return errors.New("the store holds no vault yet: there is no replica to join; start the first replica with `attestd serve --db ...` (it creates the vault), then join the others")
	}
	if err != nil {
		return err
	}
	printPending(env, j)
	return nil
}

func printPending(env *cli.Env, j store.Join) {
	fmt.Fprintf(env.Stdout, "join request %s of replica %s is %s.\n", j.ID, j.Node, j.State)
	fmt.Fprintf(env.Stdout, "On an existing replica, an admin compares the id and approves it:\n  attestd ctl replica approve %s\n", j.ID)
	fmt.Fprintln(env.Stdout, "then run `attestd replica join` here again, or start `attestd serve`: either finishes the join.")
}

// alreadyKeyed reports on a replica that has a master key: nothing to do
// if it opens the store's vault, what to do if it does not.
func alreadyKeyed(ctx context.Context, env *cli.Env, b enclave.Joiner, st store.Store, data string) error {
	v, err := enclave.New(ctx, b, st, false, enclave.Options{})
	if errors.Is(err, enclave.ErrWrongMasterKey) {
		return fmt.Errorf("this replica has a vault master key of its own (%s) that does not open the store's secrets: move that file aside (it opens nothing in this store), then run `attestd replica join` again",
			filepath.Join(data, "vault", keyFileName(b.Name())))
	}
	if err != nil {
		return err
	}
	v.Close()
	if err := b.RemoveTransportKey(); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, "this replica has the vault master key already, and it opens the store's secrets: nothing to do")
	return nil
}

func keyFileName(backend string) string {
	if backend == "file" {
		return enclave.FileKeyName
	}
	return enclave.TPMKeyName
}

func runReplicaApprove(ctx context.Context, env *cli.Env, fs *flag.FlagSet, args []string) error {
	vf := addVaultFlags(fs)
	user := os.Getenv("USER")
	if user == "" {
		user = "unknown"
	}
	by := fs.String("by", "offline:"+user, "the approver's `NAME`, as the audit log records it")
	id, _, err := oneArg(fs, args, "ID (the join request id `attestd replica join` printed)")
	if err != nil {
		return err
	}
	if err := vf.check(); err != nil {
		return err
	}
	if !enclave.ValidJoinID(id) {
		return cli.Usagef("ID %q: want the 32 hex digits `attestd replica join` printed", id)
	}
	log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, b, done, err := vf.open(ctx, log)
	if err != nil {
		return err
	}
	defer done()
	v, err := enclave.New(ctx, b, st, false, enclave.Options{})
	if err != nil {
		return fmt.Errorf("this replica's vault (which would wrap the key) does not open: %w", explainVault(err, true, *vf.data, b.Name()))
	}
	defer v.Close()
	j, err := v.ApproveJoin(ctx, st, id, *by)
	if err != nil {
		return err
	}
	auditReplica(ctx, st, j.ID, map[string]any{"action": "replica.approve", "join": j.ID, "node": j.Node, "by": *by})
	fmt.Fprintf(env.Stdout, "approved join %s of replica %s: run `attestd replica join` (or start `attestd serve`) on it to finish\n", j.ID, j.Node)
	return nil
}

// auditReplica appends an admin audit record about a join (best effort:
// the join itself is done).
func auditReplica(ctx context.Context, st store.Store, subject string, fields map[string]any) {
	details, _ := json.Marshal(fields)
	_, _ = st.AppendAudit(ctx, store.AuditEntry{Kind: store.KindAdmin, Subject: subject, Details: details})
}

// openVault opens this replica's vault for serve. A replica with no key
// on a shared store finishes its join first if it is approved; a refusal
// says what to do. A replica that has its key pays nothing for this.
func openVault(ctx context.Context, backend enclave.Backend, st store.Store, shared bool, dataDir string, log *slog.Logger) (*enclave.Vault, error) {
	opts := enclave.Options{Logger: log.With("component", "vault")}
	v, err := enclave.New(ctx, backend, st, true, opts)
	if j, ok := backend.(enclave.Joiner); ok && shared && errors.Is(err, enclave.ErrNotJoined) {
		joined, ferr := enclave.FinishJoin(ctx, j, st)
		switch {
		case ferr == nil:
			log.Info("replica joined: vault master key received and protected by the backend", "join", joined.ID, "node", joined.Node, "approved_by", joined.ApprovedBy)
			auditReplica(ctx, st, joined.ID, map[string]any{"action": "replica.joined", "join": joined.ID, "node": joined.Node, "by": "attestd serve"})
			v, err = enclave.New(ctx, backend, st, false, opts)
		case errors.Is(ferr, enclave.ErrJoinPending):
			return nil, fmt.Errorf("this replica's join request %s (replica %s) is not approved yet: an admin approves it on an existing replica with `attestd ctl replica approve %s` (or offline: `attestd replica approve %s`), then start this replica again",
				joined.ID, joined.Node, joined.ID, joined.ID)
		case errors.Is(ferr, enclave.ErrNoJoin):
			// No join in progress: err says what to do.
		default:
			return nil, fmt.Errorf("finishing this replica's join: %w", ferr)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("opening vault: %w", explainVault(err, shared, dataDir, backend.Name()))
	}
	return v, nil
}

// explainVault adds to a vault refusal what the operator should do.
func explainVault(err error, shared bool, dataDir, backend string) error {
	keyFile := filepath.Join(dataDir, "vault", keyFileName(backend))
	switch {
	case errors.Is(err, enclave.ErrWrongMasterKey) && shared:
		return fmt.Errorf("%w: join it with `attestd replica join --data %s --db ...` and approve it on an existing replica (`attestd ctl replica approve ID`); first move its own key %s aside, it opens nothing in this store (docs/attestd.md, \"Replicas\")", err, dataDir, keyFile)
	case errors.Is(err, enclave.ErrWrongMasterKey):
		return fmt.Errorf("%w: %s is not the key this store was written with: restore the data directory's vault key from a backup", err, keyFile)
	case errors.Is(err, enclave.ErrNotJoined) && shared:
		return fmt.Errorf("%w: this is a new replica: join it with `attestd replica join --data %s --db ...` and approve it on an existing replica (`attestd ctl replica approve ID`) (docs/attestd.md, \"Replicas\")", err, dataDir)
	case errors.Is(err, enclave.ErrNotJoined):
		return fmt.Errorf("%w: restore the backend's key file %s from a backup (the embedded store serves one attestd; replicas share a PostgreSQL store)", err, keyFile)
	}
	return err
}
