package attestdcmd

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/bulwark-project/bulwark/enclave"
)

// openVaultBackend returns the master-key backend named by --vault.
func openVaultBackend(name, dataDir, tpmSpec string, allowFile bool, log *slog.Logger) (enclave.Backend, error) {
	switch name {
	case "file":
		if !allowFile {
			return nil, fmt.Errorf("--vault=file keeps the vault master key in a plain file (development only): add --allow-insecure-file-vault to accept that")
		}
		dir := filepath.Join(dataDir, "vault")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("vault directory: %w", err)
		}
		return enclave.NewFileBackend(dir, true, log.With("component", "vault")), nil
	case "tpm", "sgx":
		// TODO: wire enclave's TPM and SGX backends when they land.
		return nil, fmt.Errorf("--vault=%s: backend not available in this build yet; use --vault=file --allow-insecure-file-vault for development", name)
	default:
		return nil, fmt.Errorf("--vault=%q: want tpm, sgx or file", name)
	}
}
