// Package enclave is attestd's secret vault: secrets are encrypted at rest
// (AES-256-GCM) under a 32-byte master key that a Backend holds — sealed to
// the host TPM (tpm, the default), sealed by an SGX enclave (sgx), or, for
// development only, a plain file (file). Plaintext exists only inside this
// package: Put encrypts, and Release decrypts and immediately wraps each
// secret to the attested guest's key (enclave/wrap); nothing returns a
// secret in clear.
package enclave

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/bulwark-project/bulwark/enclave/vaultstore"
	"github.com/bulwark-project/bulwark/enclave/wrap"
)

// KeySize is the size of the master key.
const KeySize = 32

// MaxSecretSize bounds one secret's plaintext (wrap's limit).
const MaxSecretSize = wrap.MaxSecretSize

// MaxReleaseNames bounds how many secrets one Release may open.
const MaxReleaseNames = 64

var (
	// ErrNoMasterKey: the backend holds no master key yet (Init it).
	ErrNoMasterKey = errors.New("enclave: no master key initialised")
	// ErrMasterKeyExists: Init found a master key already.
	ErrMasterKeyExists = errors.New("enclave: a master key exists already")
	// ErrUnavailable: the backend cannot run here (no TPM, not inside an
	// SGX enclave, insecure file backend not allowed, not in this build).
	ErrUnavailable = errors.New("enclave: backend unavailable")
	// ErrDecrypt: a stored ciphertext does not open under the master key
	// with its name and version (tampered, swapped or wrong key).
	ErrDecrypt = errors.New("enclave: secret does not decrypt (tampered, moved or wrong master key)")
	// ErrInvalid: bad secret name, size, or release argument.
	ErrInvalid = errors.New("enclave: invalid argument")
	// ErrWrongMasterKey: the backend's master key does not open the vault
	// in the store (its key-check value, or a secret): another replica's
	// vault, or a replica that never joined this one.
	ErrWrongMasterKey = errors.New("enclave: this replica's vault master key does not open the secrets in the store")
	// ErrNotJoined: the backend has no master key, but the store holds a
	// vault under one: the key must come from a replica that has it (a
	// join) or from a backup of the backend's key; a new key would open
	// nothing.
	ErrNotJoined = errors.New("enclave: this replica has no vault master key, but the store holds a vault encrypted under one")
)

// Backend holds the master key. Implementations: the TPM backend
// (NewTPMBackend), SGX (NewSGXBackend) and the development file backend
// (NewFileBackend). All pass the one conformance suite in backend_test.go.
type Backend interface {
	// Name is "tpm", "sgx" or "file".
	Name() string
	// Init creates a fresh random master key and stores it protected;
	// ErrMasterKeyExists if one exists.
	Init(ctx context.Context) error
	// Open returns the master key (KeySize bytes; the caller zeroes it when
	// done); ErrNoMasterKey if Init never ran, ErrUnavailable if the
	// protection cannot be used here, another error if the protected key
	// does not open (e.g. sealed to another TPM).
	Open(ctx context.Context) ([]byte, error)
}

// SecretStore is the part of the store the vault needs; attestd's store
// (internal/store) satisfies it. The key-check value (VaultCheck) is what
// every replica sharing the store checks its master key against when it
// opens.
type SecretStore interface {
	PutSecret(ctx context.Context, s vaultstore.Secret, prevVersion uint64) error
	GetSecret(ctx context.Context, name string) (vaultstore.Secret, error)
	ListSecrets(ctx context.Context) ([]vaultstore.SecretMeta, error)
	DeleteSecret(ctx context.Context, name string) error
	PutVaultCheck(ctx context.Context, check []byte) error
	VaultCheck(ctx context.Context) ([]byte, error)
}

// Options configure a Vault. The zero value is usable.
type Options struct {
	Logger *slog.Logger     // nil: discard
	Rand   io.Reader        // nil: crypto/rand
	Now    func() time.Time // nil: time.Now
}

// Meta is what an admin says about a secret besides its value.
type Meta struct {
	Description string // at most 1024 bytes
}

// Wrapped is one released secret, sealed to the guest key (wrap.Seal with
// the sandbox id and the secret name).
type Wrapped struct {
	Name    string
	Version uint64
	Sealed  []byte
}

// Vault encrypts secrets into a SecretStore under a backend's master key.
// It is safe for concurrent use. Close when done (zeroes the key).
type Vault struct {
	backend string
	st      SecretStore
	log     *slog.Logger
	rand    io.Reader
	now     func() time.Time

	mu   sync.RWMutex
	key  []byte
	aead cipher.AEAD
}

// New opens the backend's master key — creating it with Init when the
// backend has none, create is true and the store holds no vault yet — and
// returns a vault over st. Before it returns, it checks the key against
// the store's key-check value (writing that value the first time): a key
// that does not open the store's vault is ErrWrongMasterKey, found here at
// start and not at the first release. A backend without a key over a store
// that holds a vault is ErrNotJoined (and ErrNoMasterKey).
func New(ctx context.Context, b Backend, st SecretStore, create bool, opts Options) (*Vault, error) {
	if b == nil || st == nil {
		return nil, fmt.Errorf("enclave: New needs a backend and a store: %w", ErrInvalid)
	}
	key, err := b.Open(ctx)
	if errors.Is(err, ErrNoMasterKey) && create {
		// A new key cannot open an existing vault: never create one
		// silently over a store that has one (the key file was lost or
		// moved, or this is a new replica that has not joined).
		if err := storeHasVault(ctx, st, b.Name()); err != nil {
			return nil, err
		}
		if err = b.Init(ctx); err != nil {
			return nil, fmt.Errorf("enclave: initialising %s master key: %w", b.Name(), err)
		}
		key, err = b.Open(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("enclave: opening %s master key: %w", b.Name(), err)
	}
	v, err := openedVault(b.Name(), key, st, opts)
	if err != nil {
		return nil, err
	}
	if err := v.checkStore(ctx); err != nil {
		v.Close()
		return nil, err
	}
	v.log.Info("vault opened", "backend", b.Name())
	return v, nil
}

// storeHasVault returns ErrNotJoined (and ErrNoMasterKey) when st holds a
// vault's key-check value or secrets.
func storeHasVault(ctx context.Context, st SecretStore, backend string) error {
	_, err := st.VaultCheck(ctx)
	switch {
	case err == nil:
		return fmt.Errorf("%w; refusing to create a new key in the %s backend (%w)", ErrNotJoined, backend, ErrNoMasterKey)
	case !errors.Is(err, vaultstore.ErrNotFound):
		return fmt.Errorf("enclave: reading the vault check value: %w", err)
	}
	existing, err := st.ListSecrets(ctx)
	if err != nil {
		return fmt.Errorf("enclave: checking for existing secrets: %w", err)
	}
	if len(existing) > 0 {
		return fmt.Errorf("%w (%d secrets); refusing to create a new key in the %s backend (%w)", ErrNotJoined, len(existing), backend, ErrNoMasterKey)
	}
	return nil
}

// openedVault takes ownership of key (zeroing it on failure).
func openedVault(backend string, key []byte, st SecretStore, opts Options) (*Vault, error) {
	if len(key) != KeySize {
		clear(key)
		return nil, fmt.Errorf("enclave: %s master key is %d bytes, want %d", backend, len(key), KeySize)
	}
	aead, err := newAEAD(key)
	if err != nil {
		clear(key)
		return nil, err
	}
	v := &Vault{backend: backend, st: st, log: opts.Logger, rand: opts.Rand, now: opts.Now, key: key, aead: aead}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	if v.rand == nil {
		v.rand = rand.Reader
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, fmt.Errorf("enclave: %w", err)
	}
	return aead, nil
}

// Backend names the backend holding the master key.
func (v *Vault) Backend() string { return v.backend }

// Close forgets the master key (zeroing it). Later calls fail.
func (v *Vault) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	clear(v.key)
	v.key, v.aead = nil, nil
	return nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidName reports whether name is a valid secret name: 1–128 characters of
// [A-Za-z0-9._-], starting with a letter or digit (it becomes a file name
// under /run/secrets in the guest).
func ValidName(name string) bool { return nameRE.MatchString(name) }

// aad binds a ciphertext to its secret's name and version.
func aad(name string, version uint64) []byte {
	b := fmt.Appendf(nil, "bulwark-vault-v1\x00%s\x00", name)
	return binary.BigEndian.AppendUint64(b, version)
}

func (v *Vault) cipher() (cipher.AEAD, error) {
	if v.aead == nil {
		return nil, fmt.Errorf("enclave: vault is closed: %w", ErrUnavailable)
	}
	return v.aead, nil
}

// Put stores plaintext under name, creating the secret (version 1) or
// replacing it (version+1). Concurrent writers from several replicas are
// resolved by the store's version check: the loser gets vaultstore.ErrConflict.
// The caller should zero plaintext after Put returns.
func (v *Vault) Put(ctx context.Context, name string, plaintext []byte, meta Meta) (vaultstore.SecretMeta, error) {
	if !ValidName(name) {
		return vaultstore.SecretMeta{}, fmt.Errorf("enclave: secret name %q: want 1-128 of [A-Za-z0-9._-] starting with a letter or digit: %w", name, ErrInvalid)
	}
	if len(plaintext) > MaxSecretSize {
		return vaultstore.SecretMeta{}, fmt.Errorf("enclave: secret %q is %d bytes, the limit is %d: %w", name, len(plaintext), MaxSecretSize, ErrInvalid)
	}
	if len(meta.Description) > 1024 {
		return vaultstore.SecretMeta{}, fmt.Errorf("enclave: description of %q is over 1024 bytes: %w", name, ErrInvalid)
	}
	var prev uint64
	var created time.Time
	old, err := v.st.GetSecret(ctx, name)
	switch {
	case err == nil:
		prev, created = old.Version, old.CreatedAt
	case errors.Is(err, vaultstore.ErrNotFound):
	default:
		return vaultstore.SecretMeta{}, fmt.Errorf("enclave: reading secret %q: %w", name, err)
	}
	version := prev + 1
	v.mu.RLock()
	aead, err := v.cipher()
	if err != nil {
		v.mu.RUnlock()
		return vaultstore.SecretMeta{}, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := io.ReadFull(v.rand, nonce); err != nil {
		v.mu.RUnlock()
		return vaultstore.SecretMeta{}, fmt.Errorf("enclave: random nonce: %w", err)
	}
	ct := aead.Seal(nonce, nonce, plaintext, aad(name, version))
	v.mu.RUnlock()
	now := v.now()
	if created.IsZero() {
		created = now
	}
	s := vaultstore.Secret{
		SecretMeta: vaultstore.SecretMeta{Name: name, Version: version, Size: len(plaintext), Description: meta.Description, CreatedAt: created, UpdatedAt: now},
		Ciphertext: ct,
	}
	if err := v.st.PutSecret(ctx, s, prev); err != nil {
		return vaultstore.SecretMeta{}, fmt.Errorf("enclave: storing secret %q: %w", name, err)
	}
	v.log.Info("secret stored", "name", name, "version", version, "size", len(plaintext))
	got, err := v.st.GetSecret(ctx, name)
	if err != nil {
		return s.SecretMeta, nil
	}
	return got.SecretMeta, nil
}

// Delete removes a secret (vaultstore.ErrNotFound if absent).
func (v *Vault) Delete(ctx context.Context, name string) error {
	if err := v.st.DeleteSecret(ctx, name); err != nil {
		return fmt.Errorf("enclave: deleting secret %q: %w", name, err)
	}
	v.log.Info("secret deleted", "name", name)
	return nil
}

// List returns the names and metadata of all secrets — never a value.
func (v *Vault) List(ctx context.Context) ([]vaultstore.SecretMeta, error) {
	m, err := v.st.ListSecrets(ctx)
	if err != nil {
		return nil, fmt.Errorf("enclave: listing secrets: %w", err)
	}
	return m, nil
}

// Release opens each named secret and wraps it to guestPub for sandboxID
// (wrap.Seal binds both, and the name). Plaintext is zeroed as soon as it is
// wrapped. It fails as a whole — returning no secret — if any name is
// invalid, duplicated or missing, or any ciphertext does not open. The
// caller has already checked that an attestation grants these names.
func (v *Vault) Release(ctx context.Context, names []string, guestPub []byte, sandboxID string) ([]Wrapped, error) {
	if len(names) == 0 || len(names) > MaxReleaseNames {
		return nil, fmt.Errorf("enclave: release of %d secrets: want 1..%d: %w", len(names), MaxReleaseNames, ErrInvalid)
	}
	if len(guestPub) != wrap.PublicKeySize {
		return nil, fmt.Errorf("enclave: guest public key is %d bytes, want %d: %w", len(guestPub), wrap.PublicKeySize, ErrInvalid)
	}
	if sandboxID == "" || len(sandboxID) > 128 {
		return nil, fmt.Errorf("enclave: sandbox id must be 1..128 bytes: %w", ErrInvalid)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if !ValidName(n) || seen[n] {
			return nil, fmt.Errorf("enclave: release name %q is invalid or repeated: %w", n, ErrInvalid)
		}
		seen[n] = true
	}
	out := make([]Wrapped, 0, len(names))
	for _, n := range names {
		s, err := v.st.GetSecret(ctx, n)
		if errors.Is(err, vaultstore.ErrNotFound) {
			return nil, &MissingSecretError{Name: n}
		}
		if err != nil {
			return nil, fmt.Errorf("enclave: secret %q: %w", n, err)
		}
		pt, err := v.open(s)
		if err != nil {
			return nil, err
		}
		sealed, err := wrap.Seal(guestPub, sandboxID, n, pt)
		clear(pt)
		if err != nil {
			return nil, fmt.Errorf("enclave: wrapping secret %q: %w", n, err)
		}
		out = append(out, Wrapped{Name: n, Version: s.Version, Sealed: sealed})
	}
	v.log.Info("secrets released", "sandbox", sandboxID, "names", names)
	return out, nil
}

// MissingSecretError is Release's error for a name the vault does not
// hold. It wraps vaultstore.ErrNotFound.
type MissingSecretError struct{ Name string }

func (e *MissingSecretError) Error() string {
	return fmt.Sprintf("enclave: secret %q is not in the vault", e.Name)
}

func (e *MissingSecretError) Unwrap() error { return vaultstore.ErrNotFound }

// open decrypts one stored secret; the caller zeroes the result.
func (v *Vault) open(s vaultstore.Secret) ([]byte, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	aead, err := v.cipher()
	if err != nil {
		return nil, err
	}
	ns := aead.NonceSize()
	if len(s.Ciphertext) < ns+aead.Overhead() {
		return nil, fmt.Errorf("enclave: secret %q: %w", s.Name, ErrDecrypt)
	}
	pt, err := aead.Open(nil, s.Ciphertext[:ns], s.Ciphertext[ns:], aad(s.Name, s.Version))
	if err != nil {
		return nil, fmt.Errorf("enclave: secret %q: %w", s.Name, ErrDecrypt)
	}
	if len(pt) != s.Size {
		clear(pt)
		return nil, fmt.Errorf("enclave: secret %q: size differs from its metadata: %w", s.Name, ErrDecrypt)
	}
	return pt, nil
}
