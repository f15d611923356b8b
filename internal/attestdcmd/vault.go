package attestdcmd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/bulwark-project/bulwark/enclave"
	"github.com/bulwark-project/bulwark/internal/cli"
	"github.com/bulwark-project/bulwark/tpm"
)

// checkVaultFlags validates --vault and --allow-insecure-file-vault
// (usage errors), before serve creates anything.
func checkVaultFlags(name string, allowFile bool) error {
	switch name {
	case "tpm", "sgx":
		return nil
	case "file":
		if !allowFile {
			return cli.Usagef("--vault=file keeps the vault master key in a plain file (development only): add --allow-insecure-file-vault to accept that")
		}
		return nil
	default:
		return cli.Usagef("--vault %q: want tpm, sgx or file", name)
	}
}

// openVaultBackend returns the master-key backend named by --vault, which
// serve has checked (checkVaultFlags), and a function that releases what
// it holds (the TPM) when attestd stops.
func openVaultBackend(ctx context.Context, name, dataDir, tpmSpec string, log *slog.Logger) (enclave.Backend, func(), error) {
	dir := filepath.Join(dataDir, "vault")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("vault directory: %w", err)
	}
	vlog := log.With("component", "vault")
	switch name {
	case "file":
		return enclave.NewFileBackend(dir, true, vlog), func() {}, nil
	case "tpm":
		t, err := tpm.OpenWith(ctx, tpmSpec, tpm.Options{Logger: log.With("component", "tpm")})
		if err != nil {
			return nil, nil, fmt.Errorf("--vault=tpm: opening this host's TPM (--tpm %q): %w (for development without a TPM: --vault=file --allow-insecure-file-vault)", tpmSpec, err)
		}
		return enclave.NewTPMBackend(dir, t, nil), func() { t.Close() }, nil
	default: // "sgx"
		return enclave.NewSGXBackend(dir), func() {}, nil
	}
}
