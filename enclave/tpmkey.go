package enclave

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/bulwark-project/bulwark/internal/fsutil"
)

// TPMKeyName is the file holding the TPM-sealed master key blob.
const TPMKeyName = "vault-master.tpmseal"

// defaultSealPCRs are the PCRs the master key is sealed to by default: PCR
// 7, the host's Secure Boot policy. Changing the Secure Boot state (or the
// TPM) makes the vault unopenable; see docs/vault.md for recovery.
var defaultSealPCRs = []int{7}

// Sealer is the TPM operation the tpm backend needs; *tpm.TPM satisfies it.
type Sealer interface {
	// Seal seals secret to this TPM and the current values of pcrs.
	Seal(ctx context.Context, secret []byte, pcrs []int) ([]byte, error)
	// Unseal opens a blob sealed by this TPM, while the PCRs still match.
	Unseal(ctx context.Context, blob []byte) ([]byte, error)
}

// TPMBackend keeps the master key sealed to the attestd host's TPM (and its
// PCRs) in a file in the data directory. The file alone is useless: only the
// TPM that sealed it can open it, and only in the same PCR state.
type TPMBackend struct {
	Dir  string
	TPM  Sealer
	PCRs []int     // nil: defaultSealPCRs
	Rand io.Reader // nil: crypto/rand
}

// NewTPMBackend returns the TPM backend storing its sealed blob in dir.
func NewTPMBackend(dir string, t Sealer, pcrs []int) *TPMBackend {
	return &TPMBackend{Dir: dir, TPM: t, PCRs: pcrs}
}

// Name implements Backend.
func (b *TPMBackend) Name() string { return "tpm" }

func (b *TPMBackend) check() error {
	if b.TPM == nil {
		return fmt.Errorf("%w: the tpm vault backend needs a TPM (attestd --tpm SPEC; /dev/tpmrm0 on a real host)", ErrUnavailable)
	}
	if b.Dir == "" {
		return fmt.Errorf("tpm backend: no data directory: %w", ErrInvalid)
	}
	return nil
}

// Init implements Backend: a fresh random key, sealed, checked by unsealing
// it once, then written (0600, O_EXCL).
func (b *TPMBackend) Init(ctx context.Context) error {
	if err := b.check(); err != nil {
		return err
	}
	r := b.Rand
	if r == nil {
		r = rand.Reader
	}
	key := make([]byte, KeySize)
	defer clear(key)
	if _, err := io.ReadFull(r, key); err != nil {
		return fmt.Errorf("tpm backend: random key: %w", err)
	}
	return b.sealNew(ctx, TPMKeyName, "master key", key)
}

// Import implements Joiner: key, received from another replica, sealed to
// this TPM as Init seals a fresh one.
func (b *TPMBackend) Import(ctx context.Context, key []byte) error {
	if err := b.check(); err != nil {
		return err
	}
	if len(key) != KeySize {
		return fmt.Errorf("tpm backend: master key is %d bytes, want %d: %w", len(key), KeySize, ErrInvalid)
	}
	return b.sealNew(ctx, TPMKeyName, "master key", key)
}

// TPMTransportKeyName is the file holding a joining replica's sealed
// transport private key (see Joiner), removed once the join completes.
const TPMTransportKeyName = "vault-join-transport.tpmseal"

// SealTransportKey implements Joiner: sealed to this TPM and its PCRs,
// like the master key.
func (b *TPMBackend) SealTransportKey(ctx context.Context, priv []byte) error {
	if err := b.check(); err != nil {
		return err
	}
	return b.sealNew(ctx, TPMTransportKeyName, "transport key", priv)
}

// OpenTransportKey implements Joiner.
func (b *TPMBackend) OpenTransportKey(ctx context.Context) ([]byte, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	p := filepath.Join(b.Dir, TPMTransportKeyName)
	blob, err := readSealedBlob("tpm", p)
	if errors.Is(err, ErrNoMasterKey) {
		return nil, ErrNoJoin
	}
	if err != nil {
		return nil, err
	}
	k, err := b.TPM.Unseal(ctx, blob)
	if err != nil {
		return nil, fmt.Errorf("tpm backend: unsealing %s (sealed by another TPM, the TPM was cleared, or PCR %v changed): %w", p, b.pcrs(), err)
	}
	return k, nil
}

// RemoveTransportKey implements Joiner.
func (b *TPMBackend) RemoveTransportKey() error {
	return removeIfExists(filepath.Join(b.Dir, TPMTransportKeyName))
}

// sealNew seals secret to this TPM, checks that it unseals, and writes it
// to the new file name (0600, O_EXCL).
func (b *TPMBackend) sealNew(ctx context.Context, name, what string, secret []byte) error {
	p := filepath.Join(b.Dir, name)
	if _, err := os.Stat(p); err == nil {
		return fmt.Errorf("%s: %w", p, ErrMasterKeyExists)
	}
	blob, err := b.TPM.Seal(ctx, secret, b.pcrs())
	if err != nil {
		return fmt.Errorf("tpm backend: sealing the %s: %w", what, err)
	}
	back, err := b.TPM.Unseal(ctx, blob)
	if err != nil {
		return fmt.Errorf("tpm backend: the freshly sealed %s does not unseal: %w", what, err)
	}
	ok := subtle.ConstantTimeCompare(back, secret) == 1
	clear(back)
	if !ok {
		return fmt.Errorf("tpm backend: the freshly sealed %s unseals to other bytes", what)
	}
	if err := os.MkdirAll(b.Dir, 0o700); err != nil {
		return fmt.Errorf("tpm backend: %w", err)
	}
	return writeNewFile(p, blob)
}

// removeIfExists removes path; a missing file is not an error.
func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// maxSealedBlob bounds the sealed blob read from disk.
const maxSealedBlob = 64 << 10

// readSealedBlob reads a backend's sealed master key; a missing file is
// ErrNoMasterKey (a vault not initialised yet).
func readSealedBlob(backend, path string) ([]byte, error) {
	blob, err := fsutil.ReadFileLimit(path, maxSealedBlob)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoMasterKey
	}
	if err != nil {
		return nil, fmt.Errorf("%s backend: %w", backend, err)
	}
	return blob, nil
}

// Open implements Backend.
func (b *TPMBackend) Open(ctx context.Context) ([]byte, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	p := filepath.Join(b.Dir, TPMKeyName)
	blob, err := readSealedBlob("tpm", p)
	if err != nil {
		return nil, err
	}
	key, err := b.TPM.Unseal(ctx, blob)
	if err != nil {
		return nil, fmt.Errorf("tpm backend: unsealing %s (sealed by another TPM, the TPM was cleared, or PCR %v changed): %w", p, b.pcrs(), err)
	}
	if len(key) != KeySize {
		clear(key)
		return nil, fmt.Errorf("tpm backend: unsealed master key is %d bytes, want %d", len(key), KeySize)
	}
	return key, nil
}

func (b *TPMBackend) pcrs() []int {
	if b.PCRs == nil {
		return defaultSealPCRs
	}
	return b.PCRs
}
