package enclave

import (
	"context"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"

	"github.com/bulwark-project/bulwark/enclave/vaultstore"
)

// A new attestd replica receives the vault master key from an existing one
// (docs/attestd.md "Replicas"):
//
//  1. StartJoin, on the new replica: a fresh HPKE transport key pair; the
//     private half is protected by the replica's own backend (sealed to its
//     TPM), the public half published in the shared store as a join
//     request whose id is the key's fingerprint (JoinID).
//  2. Vault.ApproveJoin, on an existing replica, when an admin approves
//     the request by its id: the master key is sealed with HPKE to the
//     request's public key (the info string binds the id and node name)
//     and stored in the request.
//  3. FinishJoin, on the new replica: it opens the wrapped key with its
//     transport key, checks it against the store's key-check value, has
//     its backend protect it as its own master key (Import: sealed to its
//     TPM), then deletes the request and the transport key.
//
// Only the wrapped key is ever in the store, and only the joining
// replica's transport key opens it.

var (
	// ErrNoJoin: this replica has no join in progress (no transport key),
	// or its request was removed (denied) from the store.
	ErrNoJoin = errors.New("enclave: no replica join in progress")
	// ErrJoinPending: the join request is not approved yet.
	ErrJoinPending = errors.New("enclave: the replica join request is not approved yet")
	// ErrNothingToJoin: the store holds no vault yet; start the first
	// replica instead of joining.
	ErrNothingToJoin = errors.New("enclave: the store holds no vault to join yet")
	// ErrJoinKey: the wrapped master key does not open with this
	// replica's transport key (it was wrapped to another key, or altered).
	ErrJoinKey = errors.New("enclave: the wrapped master key does not open with this replica's transport key")
)

// Joiner is a backend that can take part in a replica join: it protects a
// transport private key as it protects the master key, and imports a
// master key received from another replica. The tpm and file backends are
// Joiners.
type Joiner interface {
	Backend
	// SealTransportKey stores priv protected like the master key;
	// ErrMasterKeyExists if a transport key is stored already.
	SealTransportKey(ctx context.Context, priv []byte) error
	// OpenTransportKey returns the stored transport private key (the caller
	// zeroes it); ErrNoJoin if none is stored.
	OpenTransportKey(ctx context.Context) ([]byte, error)
	// RemoveTransportKey deletes the stored transport key, if any.
	RemoveTransportKey() error
	// Import stores key as the master key, protected as Init would;
	// ErrMasterKeyExists if the backend has one.
	Import(ctx context.Context, key []byte) error
}

// JoinStore is the part of the store a join needs; attestd's store
// (internal/store) satisfies it.
type JoinStore interface {
	VaultCheck(ctx context.Context) ([]byte, error)
	CreateJoin(ctx context.Context, j vaultstore.Join) error
	GetJoin(ctx context.Context, id string) (vaultstore.Join, error)
	ApproveJoin(ctx context.Context, id string, wrapped []byte, by string) (vaultstore.Join, error)
	DeleteJoin(ctx context.Context, id string) error
}

var joinKEM = hpke.DHKEM(ecdh.X25519())

// JoinID is the id of a join request: the first 16 bytes of the SHA-256 of
// the transport public key, in hex. An admin approving an id approves that
// key and no other.
func JoinID(pub []byte) string {
	d := sha256.Sum256(pub)
	return hex.EncodeToString(d[:16])
}

var joinIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// ValidJoinID reports whether id has the form of a JoinID.
func ValidJoinID(id string) bool { return joinIDRE.MatchString(id) }

var nodeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidNodeName reports whether name is a valid replica name: 1–64 of
// [A-Za-z0-9._-], starting with a letter or digit.
func ValidNodeName(name string) bool { return nodeRE.MatchString(name) }

func joinInfo(id, node string) []byte {
	return fmt.Appendf(nil, "bulwark replica join v1\x00%s\x00%s", id, node)
}

// StartJoin begins (or, run again, resumes) this replica's join: it makes
// and protects a transport key unless one is stored, and publishes the
// join request in st. It refuses when the backend has a master key
// (ErrMasterKeyExists) and when the store has no vault yet
// (ErrNothingToJoin). It returns the request as stored.
func StartJoin(ctx context.Context, b Joiner, st JoinStore, node string) (vaultstore.Join, error) {
	if !ValidNodeName(node) {
		return vaultstore.Join{}, fmt.Errorf("enclave: replica name %q: want 1-64 of [A-Za-z0-9._-] starting with a letter or digit: %w", node, ErrInvalid)
	}
	if err := noMasterKey(ctx, b); err != nil {
		return vaultstore.Join{}, err
	}
	if _, err := st.VaultCheck(ctx); errors.Is(err, vaultstore.ErrNotFound) {
		return vaultstore.Join{}, ErrNothingToJoin
	} else if err != nil {
		return vaultstore.Join{}, fmt.Errorf("enclave: reading the vault check value: %w", err)
	}
	pub, err := transportPublic(ctx, b)
	if errors.Is(err, ErrNoJoin) {
		k, gerr := joinKEM.GenerateKey()
		if gerr != nil {
			return vaultstore.Join{}, fmt.Errorf("enclave: generating the transport key: %w", gerr)
		}
		priv, berr := k.Bytes()
		if berr != nil {
			return vaultstore.Join{}, fmt.Errorf("enclave: transport key: %w", berr)
		}
		err = b.SealTransportKey(ctx, priv)
		clear(priv)
		if err != nil {
			return vaultstore.Join{}, fmt.Errorf("enclave: protecting the transport key: %w", err)
		}
		pub = k.PublicKey().Bytes()
	} else if err != nil {
		return vaultstore.Join{}, err
	}
	j := vaultstore.Join{ID: JoinID(pub), Node: node, PublicKey: pub}
	if err := st.CreateJoin(ctx, j); err != nil && !errors.Is(err, vaultstore.ErrConflict) {
		return vaultstore.Join{}, fmt.Errorf("enclave: publishing join request %s: %w", j.ID, err)
	}
	got, err := st.GetJoin(ctx, j.ID)
	if err != nil {
		return vaultstore.Join{}, fmt.Errorf("enclave: reading join request %s: %w", j.ID, err)
	}
	return got, nil
}

// noMasterKey returns ErrMasterKeyExists if b opens a master key.
func noMasterKey(ctx context.Context, b Backend) error {
	key, err := b.Open(ctx)
	clear(key)
	switch {
	case err == nil:
		return fmt.Errorf("enclave: the %s backend has a master key: %w", b.Name(), ErrMasterKeyExists)
	case errors.Is(err, ErrNoMasterKey):
		return nil
	default:
		return fmt.Errorf("enclave: opening %s master key: %w", b.Name(), err)
	}
}

// transportPublic returns the public half of the stored transport key
// (ErrNoJoin if none).
func transportPublic(ctx context.Context, b Joiner) ([]byte, error) {
	k, err := openTransport(ctx, b)
	if err != nil {
		return nil, err
	}
	return k.PublicKey().Bytes(), nil
}

func openTransport(ctx context.Context, b Joiner) (hpke.PrivateKey, error) {
	raw, err := b.OpenTransportKey(ctx)
	if err != nil {
		return nil, err
	}
	defer clear(raw)
	k, err := joinKEM.NewPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("enclave: the stored transport key does not parse: %w", err)
	}
	return k, nil
}

// PendingJoin returns this replica's join request as the store has it;
// ErrNoJoin if it has no join in progress or its request is gone.
func PendingJoin(ctx context.Context, b Joiner, st JoinStore) (vaultstore.Join, error) {
	pub, err := transportPublic(ctx, b)
	if err != nil {
		return vaultstore.Join{}, err
	}
	id := JoinID(pub)
	j, err := st.GetJoin(ctx, id)
	if errors.Is(err, vaultstore.ErrNotFound) {
		return vaultstore.Join{}, fmt.Errorf("%w: join request %s was removed from the store (denied?); start again with `attestd replica join`", ErrNoJoin, id)
	}
	if err != nil {
		return vaultstore.Join{}, fmt.Errorf("enclave: reading join request %s: %w", id, err)
	}
	return j, nil
}

// FinishJoin completes this replica's join once its request is approved:
// it opens the wrapped master key with the transport key, checks it
// against the store's key-check value, imports it into the backend
// (sealed to this replica's TPM), and removes the request and the
// transport key. Errors: ErrMasterKeyExists, ErrNoJoin, ErrJoinPending,
// ErrJoinKey, ErrWrongMasterKey (the key received does not open the
// store's vault).
func FinishJoin(ctx context.Context, b Joiner, st JoinStore) (vaultstore.Join, error) {
	if err := noMasterKey(ctx, b); err != nil {
		return vaultstore.Join{}, err
	}
	j, err := PendingJoin(ctx, b, st)
	if err != nil {
		return vaultstore.Join{}, err
	}
	if j.State != vaultstore.JoinApproved {
		return j, fmt.Errorf("join request %s: %w", j.ID, ErrJoinPending)
	}
	priv, err := openTransport(ctx, b)
	if err != nil {
		return j, err
	}
	key, err := hpke.Open(priv, kdfSHA256, aeadAES256, joinInfo(j.ID, j.Node), j.Wrapped)
	if err != nil {
		return j, fmt.Errorf("join request %s: %w", j.ID, ErrJoinKey)
	}
	defer clear(key)
	check, err := st.VaultCheck(ctx)
	if err != nil {
		return j, fmt.Errorf("enclave: reading the vault check value: %w", err)
	}
	if len(key) != KeySize || !keyOpensCheck(key, check) {
		return j, fmt.Errorf("join request %s: the key received: %w", j.ID, ErrWrongMasterKey)
	}
	if err := b.Import(ctx, key); err != nil {
		return j, fmt.Errorf("enclave: storing the received master key in the %s backend: %w", b.Name(), err)
	}
	back, err := b.Open(ctx)
	same := err == nil && subtle.ConstantTimeCompare(back, key) == 1
	clear(back)
	if !same {
		return j, fmt.Errorf("enclave: the imported master key does not open again from the %s backend: %v", b.Name(), err)
	}
	// The key is in place: the request (with its wrapped key) and the
	// transport key have done their work. A failure here leaves litter,
	// not a broken replica.
	if err := st.DeleteJoin(ctx, j.ID); err != nil && !errors.Is(err, vaultstore.ErrNotFound) {
		return j, fmt.Errorf("enclave: joined, but removing join request %s: %w", j.ID, err)
	}
	if err := b.RemoveTransportKey(); err != nil {
		return j, fmt.Errorf("enclave: joined, but removing the transport key: %w", err)
	}
	return j, nil
}

var (
	kdfSHA256  = hpke.HKDFSHA256()
	aeadAES256 = hpke.AES256GCM()
)

// ApproveJoin wraps this vault's master key to join request id's public
// key and stores it in the request, marked approved by by (an admin's
// name). The caller has checked that by may approve. It refuses a request
// that is not pending (vaultstore.ErrConflict) or whose id is not its key's
// fingerprint (ErrInvalid).
func (v *Vault) ApproveJoin(ctx context.Context, st JoinStore, id, by string) (vaultstore.Join, error) {
	if !ValidJoinID(id) {
		return vaultstore.Join{}, fmt.Errorf("enclave: join id %q: want 32 hex digits: %w", id, ErrInvalid)
	}
	j, err := st.GetJoin(ctx, id)
	if err != nil {
		return vaultstore.Join{}, fmt.Errorf("enclave: join request %s: %w", id, err)
	}
	if j.State != vaultstore.JoinPending {
		return vaultstore.Join{}, fmt.Errorf("enclave: join request %s is %s, not pending: %w", id, j.State, vaultstore.ErrConflict)
	}
	if JoinID(j.PublicKey) != j.ID || !ValidNodeName(j.Node) {
		return vaultstore.Join{}, fmt.Errorf("enclave: join request %s: its id is not its key's fingerprint, or its name is invalid: %w", id, ErrInvalid)
	}
	pub, err := joinKEM.NewPublicKey(j.PublicKey)
	if err != nil {
		return vaultstore.Join{}, fmt.Errorf("enclave: join request %s: public key: %w", id, ErrInvalid)
	}
	v.mu.RLock()
	if v.key == nil {
		v.mu.RUnlock()
		return vaultstore.Join{}, fmt.Errorf("enclave: vault is closed: %w", ErrUnavailable)
	}
	wrapped, err := hpke.Seal(pub, kdfSHA256, aeadAES256, joinInfo(j.ID, j.Node), v.key)
	v.mu.RUnlock()
	if err != nil {
		// A public key that parses but cannot be used (an X25519 point of
		// low order) is the request's fault, not the vault's.
		return vaultstore.Join{}, fmt.Errorf("enclave: join request %s: wrapping the master key to its public key: %v: %w", id, err, ErrInvalid)
	}
	out, err := st.ApproveJoin(ctx, id, wrapped, by)
	if err != nil {
		return vaultstore.Join{}, fmt.Errorf("enclave: approving join request %s: %w", id, err)
	}
	v.log.Info("replica join approved", "join", id, "node", j.Node, "by", by)
	return out, nil
}

var (
	_ Joiner = (*TPMBackend)(nil)
	_ Joiner = (*FileBackend)(nil)
)
